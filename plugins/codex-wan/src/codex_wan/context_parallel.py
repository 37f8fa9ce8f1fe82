"""Context parallelism (``--parallel ulysses=U``) for the Wan transformers diffusers 0.42 ships without a
``_cp_plan``: the VACE plan (``WanVACETransformer3DModel``, engine wan_vace).

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
