"""A tiny llama-architecture GGUF (about 60 KB): a SentencePiece vocabulary, random weights."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_WORDS = ["▁the", "▁a", "▁is", "▁of", "▁Paris", "▁capital", "▁France", "▁sky", "▁blue", "▁Why",
          "▁What", "▁user", "▁assistant", "▁system"]
# SentencePiece builds a word by merging neighbours that are in the vocabulary: every
# prefix of every word, and every character, is a piece of its own
WORDS = sorted({w[:i] for w in _WORDS for i in range(1, len(w) + 1)} | set(''.join(_WORDS)))
N_EMBD, N_HEAD, N_FF = 16, 2, 32


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    control = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tokens = control + [f"<0x{b:02X}>" for b in range(256)] + WORDS
    types = (
        [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * 4
        + [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(WORDS)
    )
    # SentencePiece merges the highest score first: longer pieces
    scores = [float(len(t)) if t in WORDS else 0.0 for t in tokens]
    return tokens, scores, [int(t) for t in types]


def _weights(n_vocab: int, first_word: int, seed: int) -> dict[str, npt.NDArray[np.float32]]:
    """Random weights that can never end a turn: every logit is a large positive constant
    times one output column, negative for control and byte tokens, positive for words.

    Feature 0 of every embedding is 3 and the layers add almost nothing to it, so after the
    final norm feature 0 stays positive: answers run to max_tokens, and they are words.
    """
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.3) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    embed = normal(n_vocab, N_EMBD)
    embed[:, 0] = 3.0
    output = normal(n_vocab, N_EMBD, scale=0.1)
    output[:, 0] = -3.0
    output[first_word:, 0] = rng.uniform(0.5, 1.5, n_vocab - first_word)
    ones = np.ones(N_EMBD, np.float32)
    weights = {"token_embd.weight": embed, "output_norm.weight": ones, "output.weight": output}
    weights |= {
        "blk.0.attn_norm.weight": ones, "blk.0.ffn_norm.weight": ones,
        "blk.0.attn_q.weight": normal(N_EMBD, N_EMBD),
        "blk.0.attn_k.weight": normal(N_EMBD, N_EMBD),
        "blk.0.attn_v.weight": normal(N_EMBD, N_EMBD),
        "blk.0.attn_output.weight": normal(N_EMBD, N_EMBD, scale=0.01),
        "blk.0.ffn_gate.weight": normal(N_FF, N_EMBD), "blk.0.ffn_up.weight": normal(N_FF, N_EMBD),
        "blk.0.ffn_down.weight": normal(N_EMBD, N_FF, scale=0.01),
    }
    return weights


def write_tiny_gguf(
    path: Path, *, chat_template: str | None = CHATML_TEMPLATE, seed: int = 0
) -> Path:
    """Write the model to `path`; `chat_template=None` leaves the template out."""
    tokens, scores, types = _vocabulary()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(4)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, tensor in _weights(len(tokens), len(tokens) - len(WORDS), seed).items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
