"""Context parallelism (``--parallel ulysses=U``) for the Wan transformers diffusers 0.42 ships without a
``_cp_plan``: VACE (``WanVACETransformer3DModel``, engine wan_vace) and Animate
(``WanAnimateTransformer3DModel``, engine wan_animate).

**VACE.**
VACE is Wan 2.1's transformer plus "context" blocks (``vace_blocks``) that run first, on the patch-embedded
video tokens and the patch-embedded control latents (the latter zero-padded to the video's token count),
and return one hint per VACE layer; the main blocks then add hint ``i`` to the hidden states after block
``vace_layers[i]``. What the plan splits (sequence dimension, equal contiguous parts per rank) and why:

* the rotary embeddings (``rope``'s cos and sin, ``[1, tokens, 1, head_dim]``), once, as Wan's own plan
  does: the same split tensors reach the context blocks and the main blocks;
* ``vace_blocks.0``'s ``hidden_states`` and ``control_hidden_states``: the first context block adds the two
  token by token, so both are cut at the same places; every later context block takes the control states
  the previous one returned (already the rank's part) and the hints it returns are the rank's part too;
* ``blocks.0``'s ``hidden_states``: a plan splits a module's input, not the forward's local variable, so the
  first main block is split separately from the first context block (the same cut of the same tensor);
  hint ``i`` and the hidden states it is added to are then both the rank's tokens, in the same order;
* ``proj_out``'s output is gathered back, so every rank returns the whole prediction.

The text stays whole on every rank, as in Wan's plan: it is only the keys of cross-attention, and Ulysses
gathering W identical copies of every key leaves each softmax as it was. The timestep is one value per
sample in Wan 2.1 (no per-token timestep, unlike Wan 2.2 5B), so nothing of it is split.
"""

from __future__ import annotations

from typing import Any


def vace_plan() -> dict[str, Any]:
    """The cp plan of ``WanVACETransformer3DModel`` (``enable_parallelism(cp_plan=vace_plan())``)."""
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    tokens = ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)
    return {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "vace_blocks.0": {"hidden_states": tokens, "control_hidden_states": tokens},
        "blocks.0": {"hidden_states": tokens},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def animate_plan() -> dict[str, Any]:
    """The cp plan of ``WanAnimateTransformer3DModel`` (``enable_parallelism(cp_plan=animate_plan())``).

    Animate is Wan 2.1's transformer with the pose latents added to the patch-embedded video (before the blocks,
    on the 5-D tensor) and, after every ``inject_face_latents_blocks``-th block, a face adapter: a cross-attention
    of the video tokens to the face motion vectors *of their own latent frame*. Its processor finds a token's
    frame by position (``query.unflatten(1, (T, -1))``: the sequence cut into T frames of equal length), which is
    only true of the whole sequence, not of a rank's part (a rank may hold part of a frame, and its first token
    is not frame 0's). So:

    * as in Wan's plan: the rotary embeddings split once at ``rope``, ``blocks.0``'s ``hidden_states`` split (after
      the pose was added), ``proj_out``'s output gathered; the text and the CLIP image tokens stay whole (they are
      cross-attention keys only); the motion vectors stay whole on every rank;
    * in each face adapter the video tokens are gathered back to the whole sequence right after its query
      pre-norm (``pre_norm_q``: a per-token LayerNorm, so norming then gathering is gathering then norming),
      and its output projection's result (``to_out``, per token) is split again to the rank's part before it is
      added to the rank's hidden states.

    The face attention itself still runs under diffusers' Ulysses processor (``enable_parallelism`` gives every
    attention processor the parallel config). That is exact here: every rank holds the same whole queries and the
    same keys, so Ulysses' all-to-all gathers W identical copies of each frame's queries and keys for the rank's
    heads; duplicated keys leave each softmax as it was, and the copies of the queries give the same rows, of which
    the all-to-all back hands each rank one whole copy for all heads. The face adapter's attention is small (a
    frame's tokens against its few motion vectors); what the split costs there is one all-gather per adapter.
    """
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
        "face_adapter.*.pre_norm_q": ContextParallelOutput(gather_dim=1, expected_dims=3),
        "face_adapter.*.to_out": {0: ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def animate_layout_problem(layout) -> str | None:
    """wan_animate's check before loading (``ContextParallel.layouts``): the face adapter's gather and split are
    tested with plain Ulysses only (ring attention cannot run on the CPU the tests have, and the ``*_anything``
    modes cut unequal parts)."""
    if layout.ring > 1 or layout.ulysses_anything or layout.ring_anything:
        return f"its plan splits with plain Ulysses only (ulysses=N); {layout} is not"
    return None
