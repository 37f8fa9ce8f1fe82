"""Building blocks for tiny random-weight test models: tokenizers made offline.

Tokenizer files are the one part of a model that diffusers' own tests download; these are built
locally instead. Every token id stays below ``TINY_VOCAB`` so it fits the tiny text encoders.
"""

from __future__ import annotations

import string

TINY_VOCAB = 1000
_CHARS = string.ascii_lowercase + string.digits + string.punctuation  # CLIP lower-cases its input
_CASED_CHARS = string.ascii_letters + string.digits + string.punctuation


def clip_tokenizer(max_length: int = 77):
    """A character-level CLIP tokenizer (no merges): every word becomes its letters."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _CHARS:
            vocab.setdefault(char + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", model_max_length=max_length)


def t5_encoder(d_model: int, **config):
    """A tiny T5 v1.1 encoder (``T5EncoderModel``, seed 0) of width ``d_model``: gated-gelu, the feed-forward of the
    t5-v1_1-xxl text encoders FLUX.1, SD 3.5 and Chroma use; ``config``: other T5Config values."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    settings = dict(vocab_size=TINY_VOCAB, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                    relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)
    return T5EncoderModel(T5Config(**{**settings, **config})).eval()  # eval: no dropout


def t5_tokenizer(max_length: int = 512):
    """A character-level T5 / UMT5 tokenizer built offline (no sentencepiece model, no hub).

    A ``tokenizers`` Unigram model over single characters (with and without the ``▁`` word-start
    marker), the T5 pre-tokenizer (whitespace split + Metaspace) and an ``$A </s>`` post-processor,
    wrapped as ``T5TokenizerFast`` (in transformers 5 the same class as ``T5Tokenizer``). Ids:
    ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2 like t5-v1_1-xxl and umt5-xxl; every id is below ``TINY_VOCAB``. It saves
    with ``save_pretrained`` and loads back with ``AutoTokenizer`` to the same ids.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + char, -2.5) for char in _CASED_CHARS] + [(char, -3.0) for char in _CASED_CHARS]
    assert len(vocab) < TINY_VOCAB
    backend = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    metaspace = dict(replacement="\u2581", prepend_scheme="always", split=True)
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Metaspace(**metaspace)])
    backend.decoder = decoders.Metaspace(**metaspace)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=max_length)
