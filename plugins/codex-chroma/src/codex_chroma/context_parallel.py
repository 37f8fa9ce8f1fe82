"""Context parallelism (``--parallel ulysses=U``) for Chroma: the cp plan diffusers' ``ChromaTransformer2DModel``
ships without, and the one hook its attention mask needs.

Chroma is FLUX.1's transformer with a text padding mask, so the plan is Flux's own (``FluxTransformer2DModel
._cp_plan``): the image tokens, the text tokens and both position ids split at the model's input (rank r holds
``[text_r, image_r]`` through every block, and the rotary embeddings computed from its ids), ``proj_out``'s
output gathered. The text is split, not replicated, because the attention is joint: Ulysses gathers every
rank's keys, so a replicated text would appear once per rank among the keys and weigh W times in the softmax.

The mask is what the plan cannot express. The pipeline hands the model one mask over ``[text (T), image (I)]``
(the text padding 0) and every block turns it into a query-by-key mask (``mask[:, None, None, :] *
mask[:, None, :, None]``) of the whole sequence. Under Ulysses each rank attends with every query and every key
of its heads, in the order the all-to-all gathers them: ``[text_0, image_0, text_1, image_1, ...]``. A mask in
the model's order would pair the wrong queries with the wrong keys; a plan can only cut a tensor into contiguous
parts. ``reorder_mask`` puts a diffusers model hook on the transformer that reorders the ``[B, T + I]`` mask
into the gathered order before the forward uses it, so each block's query-by-key mask is in the order of both
its queries and its keys (no communication: every rank holds the whole mask). Without it a padded prompt (every
prompt: the pipeline pads to ``max_sequence_length``) gives a different image.

Not covered: ring attention and the ``*_anything`` splits (the reordering assumes equal Ulysses parts).
"""

from __future__ import annotations

import inspect
from typing import Any

from codex_core import UsageError
from codex_diffusers import gathered_order

HOOK_NAME = "codex_chroma_mask_order"


def plan() -> dict[str, Any]:
    """The cp plan of ``ChromaTransformer2DModel``: Flux's (``enable_parallelism(cp_plan=plan())``)."""
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    tokens = ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)
    ids = ContextParallelInput(split_dim=0, expected_dims=2, split_output=False)
    return {
        "": {"hidden_states": tokens, "encoder_hidden_states": tokens, "img_ids": ids, "txt_ids": ids},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def layout_problem(layout) -> str | None:
    """The engine's check before loading (``ContextParallel.layouts``): what the mask order below cannot serve."""
    if layout.ring > 1 or layout.ulysses_anything or layout.ring_anything:
        return f"its plan splits with plain Ulysses only (ulysses=N); {layout} is not"
    return None


def token_problems(params, layout) -> list[str]:
    """Request fields whose token counts plain Ulysses cannot cut into equal parts (diffusers' equal split
    fails on the ranks, after loading, otherwise), as "field: message" lines. The text is always
    ``max_sequence_length`` tokens (the pipelines pad the prompt to it); the image is (width / 16) x
    (height / 16) tokens, checked where the request gives the size (an init image's own size is not read here)."""
    degree = layout.ulysses
    problems = []
    text = getattr(params, "max_sequence_length", None)
    if isinstance(text, int) and text % degree:
        problems.append(f"max_sequence_length: {text} text tokens cannot be split evenly across the {degree} ranks of "
                        f"--parallel {layout}; use a multiple of {degree} (e.g. {text - text % degree or degree})")
    width, height = getattr(params, "width", None), getattr(params, "height", None)
    if isinstance(width, int) and isinstance(height, int) and (width // 16) * (height // 16) % degree:
        problems.append(f"width, height: {width}x{height} gives {(width // 16) * (height // 16)} image tokens "
                        f"((width / 16) x (height / 16)), which the {degree} ranks of --parallel {layout} cannot split "
                        f"evenly; make width / 16 or height / 16 a multiple of {degree}")
    return problems


def _ulysses_degree(transformer) -> int:
    """The Ulysses degree the transformer is split with (1: not split)."""
    config = getattr(getattr(transformer, "_parallel_config", None), "context_parallel_config", None)
    if config is None:
        return 1
    if config.ring_degree > 1 or config.ulysses_anything or config.ring_anything:
        raise UsageError(f"--parallel: Chroma splits with plain Ulysses only: got ring_degree={config.ring_degree}, "
                         f"ulysses_anything={config.ulysses_anything}, ring_anything={config.ring_anything}",
                         hint="use --parallel ulysses=N")
    return config.ulysses_degree


def _mask_hook():
    from diffusers.hooks.hooks import ModelHook

    class MaskOrder(ModelHook):
        """Reorders the model's ``attention_mask`` to the gathered token order while the transformer is split;
        leaves the call alone otherwise. It may run before or after the plan's split of the inputs (the hook
        order of a module is diffusers' business): the token counts say which."""

        def initialize_hook(self, module):
            self.signature = inspect.signature(type(module).forward)
            return module

        def pre_forward(self, module, *args, **kwargs):
            bound = self.signature.bind_partial(module, *args, **kwargs)
            mask = bound.arguments.get("attention_mask")
            degree = _ulysses_degree(module)
            if mask is None or degree == 1:
                return args, kwargs
            text, image = bound.arguments["encoder_hidden_states"].shape[1], bound.arguments["hidden_states"].shape[1]
            whole = mask.shape[-1]
            if whole == degree * (text + image):  # the inputs are already the rank's parts
                pass
            elif whole == text + image and text % degree == 0 and image % degree == 0:  # not split yet
                text, image = text // degree, image // degree
            else:
                raise ValueError(f"Chroma mask of {whole} tokens does not cover {degree} ranks of {text} text + "
                                 f"{image} image tokens: is the cp plan applied?")
            mask = gathered_order(mask, text, image, degree)
            if "attention_mask" in kwargs:
                kwargs["attention_mask"] = mask
            else:  # passed by position: its place in forward's parameters, less ``self``
                args = list(args)
                args[list(self.signature.parameters).index("attention_mask") - 1] = mask
            return tuple(args), kwargs

    return MaskOrder


def reorder_mask(transformer) -> None:
    """Put the mask hook on ``transformer`` (again: no-op)."""
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(HOOK_NAME) is None:
        registry.register_hook(_mask_hook()(), HOOK_NAME)


def prepare_split(transformer) -> bool:
    """What a run on a split transformer needs (the engine calls it before every run): refuse what the hook cannot
    order, then put the hook on. Whether the transformer is split; unsplit, it is left as it is."""
    if _ulysses_degree(transformer) == 1:
        return False
    reorder_mask(transformer)
    return True
