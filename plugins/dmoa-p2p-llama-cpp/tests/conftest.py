"""Fixtures: tiny random GGUF models written on the fly, and the real SmolLM2-135M."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from dmoa_p2p_llama_cpp import LlamaCppBackend, LlamaOptions
from tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-chatml.gguf")


@pytest.fixture(scope="session")
def tiny_model_without_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-bare.gguf"
    return write_tiny_gguf(path, chat_template=None)


@pytest.fixture
def tiny(tiny_model: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaOptions(model=tiny_model, n_ctx=256).load()
    yield backend
    trio.run(backend.aclose)


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LlamaCppBackend]:
    """The embedded default model, loaded once per test module (about 0.2 s)."""
    backend = LlamaOptions(n_threads=1).load()
    yield backend
    trio.run(backend.aclose)
