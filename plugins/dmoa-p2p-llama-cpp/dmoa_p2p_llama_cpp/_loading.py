"""Loading a GGUF file into llama.cpp, with the usual mistakes caught before llama.cpp sees them."""

from __future__ import annotations

from pathlib import Path

from llama_cpp import Llama

from dmoa_p2p.backends import BackendError

GGUF_MAGIC = b"GGUF"
MEMINFO = Path("/proc/meminfo")
# weights, a tenth more for llama.cpp's compute buffers, and room for the KV cache: a rough
# check that catches hopeless cases early (a 13 GB file on an 8 GB machine), not a promise
EXTRA_FRACTION = 0.1
EXTRA_BYTES = 256 * 2**20
HINT = "pass -o model=PATH to a GGUF file"


def mem_available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable from /proc/meminfo, or None where there is no such file (not Linux)."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            amount, *unit = rest.split()
            return int(amount) * (1024 if unit == ["kB"] else 1)
    return None


def memory_needed(file_size: int) -> int:
    return file_size + int(file_size * EXTRA_FRACTION) + EXTRA_BYTES


def check_model_file(path: Path, available: int | None) -> None:
    """Raise BackendError if `path` is missing, not a GGUF file, or too large for `available`."""
    if not path.exists():
        raise BackendError(f"model file {path} not found; {HINT}")
    if not path.is_file():
        raise BackendError(f"model path {path} is not a file; {HINT}")
    try:
        with path.open("rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise BackendError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise BackendError(
            f"{path} is not a GGUF model file (it does not start with the bytes 'GGUF'); "
            "llama.cpp loads GGUF files only: download a .gguf build of the model, or convert "
            "it with llama.cpp's convert_hf_to_gguf.py"
        )
    size = path.stat().st_size
    if available is not None and memory_needed(size) > available:
        raise BackendError(
            f"model file {path} ({size / 2**30:.1f} GiB) needs about "
            f"{memory_needed(size) / 2**30:.1f} GiB of memory, but only "
            f"{available / 2**30:.1f} GiB are available; use a smaller or more quantized "
            "model, or free some memory"
        )


def load_llama(model_file: Path, n_ctx: int, n_threads: int, seed: int) -> Llama:
    """`model_file` loaded quietly; every failure is a BackendError saying why."""
    check_model_file(model_file, mem_available_bytes())
    try:
        return Llama(
            model_path=str(model_file),
            n_ctx=n_ctx,
            n_threads=n_threads,
            # prompt processing would otherwise use every core, whatever n_threads says
            n_threads_batch=n_threads,
            seed=seed,
            verbose=False,  # llama.cpp prints hundreds of lines of load details otherwise
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendError(f"llama.cpp could not load {model_file}: {exc}") from exc
