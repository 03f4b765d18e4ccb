"""dmoa-p2p backend `llama-cpp`: a local GGUF model (SmolLM2-135M by default) through llama.cpp."""

from dmoa_p2p_llama_cpp._backend import LlamaCppBackend, LlamaOptions
from dmoa_p2p_llama_cpp._chat import FALLBACK_FORMAT, NAMED_FORMATS, ChatFormat
from dmoa_p2p_llama_cpp._options import default_model_path

__all__ = [
    "FALLBACK_FORMAT",
    "NAMED_FORMATS",
    "ChatFormat",
    "LlamaCppBackend",
    "LlamaOptions",
    "default_model_path",
]
