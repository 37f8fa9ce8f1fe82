"""Building blocks for tiny random-weight test models: tokenizers made offline.

Tokenizer files are the one part of a model that diffusers' own tests download; these are built
locally instead. Every token id stays below ``TINY_VOCAB`` so it fits the tiny text encoders.
"""

from __future__ import annotations

import string

TINY_VOCAB = 1000
_CHARS = string.ascii_lowercase + string.digits + string.punctuation


def clip_tokenizer(max_length: int = 77):
    """A character-level CLIP tokenizer (no merges): every word becomes its letters."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _CHARS:
            vocab.setdefault(char + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", model_max_length=max_length)
