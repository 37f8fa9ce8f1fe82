"""Textual-inversion embeddings for one run, used by name in the prompt as A1111 does (imports torch).

A1111 files: ``.safetensors`` with ``emb_params`` (SD 1.x) or ``clip_l`` + ``clip_g`` (SDXL, one
tensor per text encoder), or a pickled ``.pt`` with ``string_to_param`` (only with --allow-pickle,
read with ``weights_only=True``). diffusers' ``load_textual_inversion`` adds the name (and
``name_1``... for multi-vector embeddings) to the tokenizer and grows the token embedding; its
``unload_textual_inversion`` removes the tokens but re-creates the embedding at the tokenizer's
length, which is not the original module (nor, when the two lengths differ, its size). So the
original embedding module and ``vocab_size`` are put back afterwards: the cached text encoders are
exactly as the checkpoint loaded them for the next run.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import torch

from codex_core import UsageError


def read_embedding(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The vectors of an embedding file: {"clip_l": t, "clip_g": t} (SDXL) or {"vectors": t} (one encoder)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif not allow_pickle:
        raise UsageError(f"embedding {path.stem}: {path} is a pickle-based file ({suffix}); loading one can run code",
                         hint="convert it to .safetensors, or pass --allow-pickle for files you trust")
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if "clip_l" in state and "clip_g" in state:
        return {"clip_l": state["clip_l"], "clip_g": state["clip_g"]}
    if "string_to_param" in state:
        return {"vectors": state["string_to_param"]["*"]}
    if "emb_params" in state:
        return {"vectors": state["emb_params"]}
    tensors = [value for value in state.values() if isinstance(value, torch.Tensor)]
    if len(tensors) == 1:
        return {"vectors": tensors[0]}
    raise UsageError(f"embedding {path.stem}: {path} is not a textual-inversion embedding "
                     f"(keys: {', '.join(sorted(state)[:5])})")


@contextmanager
def _one(pipe, name: str, vectors: torch.Tensor, tokenizer, text_encoder) -> Iterator[None]:
    width = text_encoder.get_input_embeddings().weight.shape[1]
    vectors = vectors.reshape(-1, vectors.shape[-1])
    if vectors.shape[1] != width:
        raise UsageError(f"embedding {name}: its vectors are {vectors.shape[1]} wide; this model's "
                         f"{type(text_encoder).__name__} takes {width} (an embedding for another model family?)")
    original, vocab_size = text_encoder.get_input_embeddings(), text_encoder.config.vocab_size
    before = {token.content for token in tokenizer.added_tokens_decoder.values()}
    try:
        pipe.load_textual_inversion(vectors.to(original.weight.dtype), token=name, tokenizer=tokenizer,
                                    text_encoder=text_encoder)
        yield
    finally:
        added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.content not in before]
        if added:
            pipe.unload_textual_inversion(tokens=added, tokenizer=tokenizer, text_encoder=text_encoder)
        text_encoder.set_input_embeddings(original)
        text_encoder.config.vocab_size = vocab_size


@contextmanager
def embeddings_for_run(pipe, embeddings: list[tuple[str, Path]], allow_pickle: bool) -> Iterator[None]:
    """Each (name, file) loaded under its name into the pipeline's text encoder(s) for the block."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    with ExitStack() as stack:
        for name, path in embeddings:
            vectors = read_embedding(path, allow_pickle)
            if sdxl != ("clip_g" in vectors):
                kind = "an SDXL" if "clip_g" in vectors else "an SD 1.x/2.x"
                raise UsageError(f"embedding {name}: {path} is {kind} embedding; this model is "
                                 f"{'SDXL' if sdxl else 'SD 1.x/2.x'}")
            if sdxl:
                stack.enter_context(_one(pipe, name, vectors["clip_l"], pipe.tokenizer, pipe.text_encoder))
                stack.enter_context(_one(pipe, name, vectors["clip_g"], pipe.tokenizer_2, pipe.text_encoder_2))
            else:
                stack.enter_context(_one(pipe, name, vectors["vectors"], pipe.tokenizer, pipe.text_encoder))
        yield
