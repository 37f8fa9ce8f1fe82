"""Context parallelism (``--parallel ulysses=U``) for LTX-Video and LTX-2: diffusers' own cp plans of
``LTXVideoTransformer3DModel`` and ``LTX2VideoTransformer3DModel`` (LTX-2's with one more split), with the
attention processors their text cross-attentions need under Ulysses.

diffusers 0.42's plan splits the video tokens, the text tokens and the text mask ``encoder_attention_mask``
(``[B, T]``) on the sequence dimension at the model's input, the rotary embeddings to match, and gathers
``proj_out``. The text is split, not replicated, so the gathered keys of the cross-attention are the whole
text once, in its own order (rank 0's part first): no key weighs twice in the softmax, and the mask that
Ulysses all-gathers on its last dimension lines up with them.

What fails is the mask's head dimension. ``LTXVideoAttnProcessor`` repeats the ``[B, 1, T]`` mask once per
attention head (``prepare_attention_mask``, then ``view(B, heads, 1, T)``). Ulysses hands each rank all the keys
but only ``heads / U`` of the heads, and gathers the mask on its key dimension only, so the native attention gets
a mask of ``heads`` heads for ``heads / U`` heads of scores: "The size of tensor a (2) must match the size of
tensor b (4)" with the tiny model on 2 ranks. The mask is the same for every head, so ``KeyMaskAttnProcessor``
keeps it as ``[B, 1, 1, T]`` (broadcast over heads and queries) and is otherwise diffusers' processor, line for
line. ``prepare_split`` puts it on the attentions that take a mask (each block's ``attn2``) of a split transformer.
For diffusers to need none of this, its processor would keep a key mask of one head (``[B, 1, 1, T]``), as
QwenImage's transformer builds its own.

LTX-2 (``ltx2_plan``) runs a video and an audio stream. diffusers' plan splits the video as above and leaves the
audio and its text whole on every rank: Ulysses then gathers each audio key (and its mask) once per rank, every key
the same number of times, which leaves the softmax as it is. Two more things are needed: the key mask processor on
the text cross-attentions of both streams (``attn2``, ``audio_attn2``), and splitting ``cross_attn_rope``, the video
tokens' rotary embedding of the audio-video cross-attentions, which diffusers' plan leaves whole (the split video
queries meet a whole video's rotary: "size of tensor a (24) must match the size of tensor b (48)").

Not covered: ring attention and the ``*_anything`` splits (only plain Ulysses is checked against one process
here; ring attention cannot run on the CPU ranks the tests use); LTX-2 transformers with ``rope_type`` "split"
(their rotary embeddings are 4-dim, which the plan does not split) or perturbed attention (another processor):
``prepare_split`` refuses them.
"""

from __future__ import annotations

from codex_core import UsageError

# the text tokens the LTX-Video pipelines encode (their max_sequence_length, which no request field changes)
TEXT_TOKENS = 128


def layout_problem(layout) -> str | None:
    """The engine's check before loading (``ContextParallel.layouts``): what ``prepare_split`` refuses on the ranks."""
    if layout.ring > 1 or layout.ulysses_anything or layout.ring_anything:
        return f"its split is exact for plain Ulysses only (ulysses=N); {layout} is not"
    return None


def _cp_config(attention):
    config = getattr(getattr(attention, "processor", None), "_parallel_config", None)
    return getattr(config, "context_parallel_config", None)


def key_mask_processor_class():
    """``KeyMaskAttnProcessor``, built on first use (it subclasses a diffusers class: torch is imported then)."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_ltx import LTXVideoAttnProcessor, apply_rotary_emb

    class KeyMaskAttnProcessor(LTXVideoAttnProcessor):
        """diffusers' LTXVideoAttnProcessor with the mask kept as ``[B, 1, 1, keys]`` rather than repeated per
        head, so that it broadcasts over the share of heads Ulysses leaves each rank (the same attention unsplit)."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                     image_rotary_emb=None):
            batch_size = hidden_states.shape[0]
            if attention_mask is not None:
                # the model passes a [B, 1, keys] additive bias (or [B, keys]): one row for every head and query
                attention_mask = attention_mask.reshape(batch_size, 1, 1, attention_mask.shape[-1])
            if encoder_hidden_states is None:
                encoder_hidden_states = hidden_states

            query = attn.norm_q(attn.to_q(hidden_states))
            key = attn.norm_k(attn.to_k(encoder_hidden_states))
            value = attn.to_v(encoder_hidden_states)
            if image_rotary_emb is not None:
                query = apply_rotary_emb(query, image_rotary_emb)
                key = apply_rotary_emb(key, image_rotary_emb)
            query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))

            hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                  is_causal=False, backend=self._attention_backend,
                                                  parallel_config=self._parallel_config)
            hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
            hidden_states = attn.to_out[0](hidden_states)
            return attn.to_out[1](hidden_states)

    return KeyMaskAttnProcessor


def ltx2_key_mask_processor_class():
    """``LTX2KeyMaskAttnProcessor``: diffusers' LTX2AudioVideoAttnProcessor with the key mask of one head, as above."""
    import torch
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_ltx2 import (LTX2AudioVideoAttnProcessor,
                                                                apply_interleaved_rotary_emb, apply_split_rotary_emb)

    rotary = {"interleaved": apply_interleaved_rotary_emb, "split": apply_split_rotary_emb}

    class LTX2KeyMaskAttnProcessor(LTX2AudioVideoAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                     query_rotary_emb=None, key_rotary_emb=None):
            batch_size = hidden_states.shape[0]
            if attention_mask is not None:
                attention_mask = attention_mask.reshape(batch_size, 1, 1, attention_mask.shape[-1])
            if encoder_hidden_states is None:
                encoder_hidden_states = hidden_states
            gate_logits = attn.to_gate_logits(hidden_states) if attn.to_gate_logits is not None else None

            query = attn.norm_q(attn.to_q(hidden_states))
            key = attn.norm_k(attn.to_k(encoder_hidden_states))
            value = attn.to_v(encoder_hidden_states)
            if query_rotary_emb is not None and attn.rope_type in rotary:
                query = rotary[attn.rope_type](query, query_rotary_emb)
                key = rotary[attn.rope_type](key, key_rotary_emb if key_rotary_emb is not None else query_rotary_emb)
            query, key, value = (x.unflatten(2, (attn.heads, -1)) for x in (query, key, value))

            hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                  is_causal=False, backend=self._attention_backend,
                                                  parallel_config=self._parallel_config)
            hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
            if gate_logits is not None:
                # per-head gates; the factor 2 makes zero-initialised gate logits gates of 1 (as diffusers)
                gates = 2.0 * torch.sigmoid(gate_logits)
                hidden_states = (hidden_states.unflatten(2, (attn.heads, -1)) * gates.unsqueeze(-1)).flatten(2, 3)
            hidden_states = attn.to_out[0](hidden_states)
            return attn.to_out[1](hidden_states)

    return LTX2KeyMaskAttnProcessor


# the attentions of each block that take a text mask, and the processor class diffusers gives them
MASKED = {"LTXVideoTransformer3DModel": (("attn2",), "LTXVideoAttnProcessor", key_mask_processor_class),
          "LTX2VideoTransformer3DModel": (("attn2", "audio_attn2"), "LTX2AudioVideoAttnProcessor",
                                          ltx2_key_mask_processor_class)}


def masked_attentions(transformer) -> list:
    """The text cross-attentions of an LTX transformer (none for another class: nothing of it is adapted)."""
    names = MASKED.get(type(transformer).__name__, ((),))[0]
    return [getattr(block, name) for block in getattr(transformer, "transformer_blocks", ()) for name in names]


def use_key_mask(transformer) -> int:
    """Give every masked attention of ``transformer`` the key mask processor, carrying its processor's attention
    backend and parallel config (again: no-op); how many attentions it covers."""
    _, theirs, ours = MASKED[type(transformer).__name__]
    processor_class = ours()
    attentions = masked_attentions(transformer)
    for attention in attentions:
        old = attention.processor
        if type(old).__name__ == processor_class.__name__:
            continue
        if type(old).__name__ != theirs:
            # a perturbed-attention or another processor of its own: replacing it would drop what it does
            raise UsageError(f"--parallel: the LTX transformer's attention uses {type(old).__name__}, not diffusers' "
                             f"{theirs}, whose text mask codex_ltx adapts to Ulysses")
        new = processor_class()
        # enable_parallelism and set_attention_backend set these on the processor instance
        new._parallel_config = old._parallel_config
        new._attention_backend = old._attention_backend
        attention.set_processor(new)
    return len(attentions)


def ltx2_plan() -> dict:
    """The cp plan of ``LTX2VideoTransformer3DModel``: diffusers' own, and the cross-modal rotary embedding of the
    video (``cross_attn_rope``: one row per video token, used by the audio-video cross-attentions) split with the
    video tokens, which diffusers' plan leaves whole (the split video queries would meet a whole video's rotary)."""
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.models._modeling_parallel import ContextParallelInput

    split = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)
    return {**LTX2VideoTransformer3DModel._cp_plan, "cross_attn_rope": {0: split, 1: split}}


def prepare_split(transformer) -> bool:
    """What a run on a split transformer needs (the engine calls it before every run): refuse what is not plain
    Ulysses, then the key mask processors. Whether the transformer is split; unsplit, it is left as it is."""
    configs = [cp for cp in map(_cp_config, masked_attentions(transformer)) if cp is not None]
    if not configs:
        return False
    cp = configs[0]
    if cp.ring_degree > 1 or cp.ulysses_anything or cp.ring_anything:
        raise UsageError(f"--parallel: LTX splits with plain Ulysses only: got ring_degree={cp.ring_degree}, "
                         f"ulysses_anything={cp.ulysses_anything}, ring_anything={cp.ring_anything}",
                         hint="use --parallel ulysses=N")
    rope = getattr(transformer.config, "rope_type", "interleaved")
    if rope != "interleaved":
        # "split" rotary embeddings are [B, heads, tokens, D/2]: the plan's split of the token dimension 1 of a
        # 3-dim tensor does not apply to them (diffusers would skip it, and the video queries meet every token's)
        raise UsageError(f"--parallel: this LTX-2 transformer has rope_type {rope!r}; the cp plan splits the "
                         "'interleaved' rotary embeddings only", hint="run it without --parallel")
    use_key_mask(transformer)
    return True


def split_tokens_problem(frames: int, height: int, width: int, text_tokens: int, degree: int) -> str | None:
    """Why diffusers' plan cannot cut this run's tokens into ``degree`` equal parts (it asserts they divide), or
    None: ``frames``, ``height``, ``width`` are the latent sizes (after the VAE and the patch sizes)."""
    video = frames * height * width
    if video % degree:
        return (f"the video is {video} tokens ({frames} latent frames x {height} x {width}), which {degree} ranks "
                "cannot split evenly")
    if text_tokens % degree:
        return f"the text is {text_tokens} tokens, which {degree} ranks cannot split evenly"
    return None

