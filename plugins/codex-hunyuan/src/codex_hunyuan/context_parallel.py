"""Context parallelism (``--parallel ulysses=U``) for HunyuanVideo: the cp plan diffusers'
``HunyuanVideoTransformer3DModel`` ships without, and the one hook its joint attention mask needs.

What the plan splits (on the sequence dimension, equal parts per rank) and what stays whole:

* the video tokens (the patch embedding's output) and the text tokens (the token refiner's output) at the
  input of the first double-stream block, so rank r holds ``[video_r, text_r]`` through every block, and
  the rotary embeddings (``rope``'s cos and sin, one row per video token) to match;
* the token refiner runs whole on every rank (its plain attention processor takes no parallel config):
  it needs all the text to pool and refine it;
* ``proj_out``'s output (video tokens only) is gathered back, so every rank returns the whole prediction.

The text is split, not replicated, for the reason Flux's own plan splits ``encoder_hidden_states``:
Ulysses gathers every rank's keys, so a replicated text would appear once per rank among the keys and
weigh W times in the softmax.

The mask is what a plan cannot express. The model builds one key mask over ``[video (L), text (T)]``
in its forward (the text padding masked) and hands that same tensor to every block. Under Ulysses the
keys arrive as ``[video_0, text_0, video_1, text_1, ...]``, so the mask must be reordered the same way;
a plan can only cut a tensor into contiguous parts, which gives rank r a slice of ``[video | text]``,
not ``[video_r, text_r]``. ``reorder_joint_mask`` puts a diffusers model hook on each joint attention
that reorders the mask to the gathered layout (no communication: every rank holds the whole mask).
Without it a padded prompt (always, in the pipeline) attends to the wrong keys. For diffusers to need no
hook, the model would build the mask inside the attention from a text mask handed to each block (as
QwenImage does with ``encoder_hidden_states_mask``), which a plan can then split with the text.

Not covered: the token_replace transformer (HunyuanVideo-I2V): its blocks treat the first
``first_frame_num_tokens`` tokens they hold as the first frame, which is only true on rank 0
(``check_transformer`` refuses it); ring attention and the ``*_anything`` splits (the reordering
assumes equal Ulysses parts). HunyuanVideo 1.5 has no plan here: its attention processor turns the text
mask into a query-by-key ``[B, 1, S, S]`` mask of the local sequence, which Ulysses (gathering only the
key dimension of a mask) cannot line up with the gathered queries; it needs a key-only mask in diffusers.
"""

from __future__ import annotations

from typing import Any

from codex_core import UsageError
from codex_diffusers import gathered_order

HOOK_NAME = "codex_hunyuan_joint_mask"
# the blocks whose attention runs on [video, text] with the model's joint mask
JOINT_BLOCKS = ("transformer_blocks", "single_transformer_blocks")


def plan() -> dict[str, Any]:
    """The cp plan of ``HunyuanVideoTransformer3DModel`` (``enable_parallelism(cp_plan=plan())``)."""
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return {
        # (cos, sin), each [video tokens, head_dim]: split after rope computed them for the whole video
        "rope": {
            0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
            1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        },
        # after the patch embedding and the token refiner, which see everything
        "transformer_blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def _cp_config(attention):
    config = getattr(getattr(attention, "processor", None), "_parallel_config", None)
    return getattr(config, "context_parallel_config", None)


def unsupported(cp) -> str | None:
    """Why the mask order below cannot serve this context-parallel config (None: it can)."""
    if cp.ring_degree > 1 or cp.ulysses_anything or cp.ring_anything:
        return (f"HunyuanVideo splits with plain Ulysses only: got ring_degree={cp.ring_degree}, "
                f"ulysses_anything={cp.ulysses_anything}, ring_anything={cp.ring_anything}")
    return None


def layout_problem(layout) -> str | None:
    """The engine's check before loading (``ContextParallel.layouts``): what ``unsupported`` refuses on the ranks."""
    if layout.ring > 1 or layout.ulysses_anything or layout.ring_anything:
        return f"its plan splits with plain Ulysses only (ulysses=N); {layout} is not"
    return None


def _ulysses_degree(attention) -> int:
    """The Ulysses degree this attention module runs with (1: not split)."""
    cp = _cp_config(attention)
    if cp is None:
        return 1
    problem = unsupported(cp)
    if problem:
        raise ValueError(problem)
    return cp.ulysses_degree


def _mask_hook():
    from diffusers.hooks.hooks import ModelHook

    class JointMaskOrder(ModelHook):
        """Reorders the joint attention's mask to the gathered key layout while the module runs under
        Ulysses; leaves the call alone otherwise."""

        def pre_forward(self, module, *args, **kwargs):
            mask = kwargs.get("attention_mask")
            degree = _ulysses_degree(module)
            if mask is None or degree == 1:
                return args, kwargs
            # the blocks pass everything by keyword: the rank's video tokens and its text tokens
            video, text = kwargs["hidden_states"].shape[1], kwargs["encoder_hidden_states"].shape[1]
            if mask.shape[-1] != degree * (video + text):
                raise ValueError(f"HunyuanVideo joint mask of {mask.shape[-1]} keys does not cover {degree} ranks "
                                 f"of {video} video + {text} text tokens: is the cp plan applied?")
            kwargs["attention_mask"] = gathered_order(mask, video, text, degree)
            return args, kwargs

    return JointMaskOrder


def joint_attentions(transformer) -> list:
    return [block.attn for name in JOINT_BLOCKS for block in getattr(transformer, name)]


def reorder_joint_mask(transformer) -> int:
    """Put the mask hook on every joint attention of ``transformer`` (again: no-op); how many it holds."""
    from diffusers.hooks import HookRegistry

    hook_class = _mask_hook()
    for attention in joint_attentions(transformer):
        registry = HookRegistry.check_if_exists_or_initialize(attention)
        if registry.get_hook(HOOK_NAME) is None:
            registry.register_hook(hook_class(), HOOK_NAME)
    return len(joint_attentions(transformer))


def prepare_split(transformer) -> bool:
    """What a run on a split transformer needs (the engine calls it before every run): refuse what the plan
    cannot split exactly, then order the joint mask. Whether the transformer is split; unsplit, it is left
    as it is."""
    configs = [cp for cp in map(_cp_config, joint_attentions(transformer)) if cp is not None]
    if not configs:
        return False
    problem = unsupported(configs[0])
    if problem:
        raise UsageError(f"--parallel: {problem}", hint="use --parallel ulysses=N")
    check_transformer(transformer.config)
    reorder_joint_mask(transformer)
    return True


def check_transformer(config) -> None:
    """Refuse a transformer the plan cannot split exactly."""
    if getattr(config, "image_condition_type", None) == "token_replace":
        raise UsageError("--parallel: this HunyuanVideo-I2V checkpoint uses token_replace conditioning, whose "
                         "blocks find the first frame by token position, which splitting the video tokens moves",
                         hint="run it without --parallel, or use a latent_concat checkpoint (HunyuanVideo-I2V-33ch)")
