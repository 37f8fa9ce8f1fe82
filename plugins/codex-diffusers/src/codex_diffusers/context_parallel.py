"""Context parallelism, declared by an engine (``DiffusersEngine.context_parallel``) and applied by the kit.

An engine that can split one job's attention across ranks (``--parallel``, ``codex_core.parallel``)
declares which of its denoisers are split and, for a model class that diffusers ships without a
``_cp_plan``, the plan the kit supplies (built lazily: plans name torch types).

The checks here read configs only (torch-free): they run before anything loads. What runs on the ranks
(process group, ``enable_parallelism``, agreeing on the seed) is ``parallel_ranks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from codex_core.parallel import Parallel, parse

from .configs import read_config

# The attention backends of the --attention choices that diffusers 0.42 registers with
# supports_context_parallel=True (its _AttentionBackendRegistry._supports_context_parallel; a test keeps the
# two in step). Named here so that the check needs no torch.
CP_BACKENDS = ("native", "_native_cudnn", "_native_flash", "flash", "sage")


@dataclass(frozen=True)
class ContextParallel:
    # pipeline components split by --parallel (every denoiser the run uses: both experts of Wan 2.2 A14B)
    denoisers: tuple[str, ...] = ("transformer",)
    # component -> a function returning its cp plan, where the model class declares no ``_cp_plan``
    plans: Mapping[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    # the config key of a denoiser's attention head count (Ulysses splits heads: it must divide)
    heads_key: str = "num_attention_heads"
    # layout -> why this engine's plan cannot split it (None: it can), checked before loading; e.g. a plan that
    # is exact for plain Ulysses only
    layouts: Callable[[Parallel], str | None] | None = None
    # request fields the kit refuses with --parallel that this engine's plan splits with the rest (wan_vace's
    # reference_images are latent frames put before the video's, not IP-Adapter images)
    split_fields: tuple[str, ...] = ()


def layout_problem(layout: Parallel, runtime) -> str | None:
    """Why ``layout`` cannot run with the other run options (diffusers' ContextParallelConfig rules, the attention
    backend, the placement), or None. The value itself is already parsed."""
    if layout.ulysses_anything and (layout.ulysses == 1 or layout.ring > 1):
        return f"{layout}: ulysses_anything needs ulysses=N>1 and no ring (diffusers' rule)"
    if layout.ring_anything and (layout.ring == 1 or layout.ulysses > 1):
        return f"{layout}: ring_anything needs ring=N>1 and no ulysses (diffusers' rule)"
    attention = getattr(runtime, "attention", "default")
    if attention != "default" and attention not in CP_BACKENDS:
        return (f"{layout} with --attention {attention}: that backend cannot split attention across ranks; "
                f"the ones that can: {', '.join(CP_BACKENDS)} (or default, which is native)")
    offload = getattr(runtime, "offload", "none")
    if offload not in ("none", "auto"):
        return (f"{layout} with --offload {offload}: every rank holds the whole model on its own GPU; offloading "
                "hooks are not combined with the split attention; drop --offload")
    return None


def heads_problems(engine, folder: Path, runtime) -> list[str]:
    """Each split denoiser of the checkpoint in ``folder`` (its configs, no weights) whose attention head count
    Ulysses cannot divide: one line each, naming --parallel, the value and the way out."""
    layout = parse(getattr(runtime, "parallel", "off"))
    declared = engine.context_parallel
    if layout is None or declared is None:
        return []
    refused = declared.layouts(layout) if declared.layouts else None
    if refused:
        return [f"--parallel {layout}: engine {engine.key}: {refused}"]
    if layout.ulysses == 1 or layout.ulysses_anything:
        return []
    problems = []
    for name in declared.denoisers:
        heads = read_config(folder, f"{name}/config.json").get(declared.heads_key)
        if isinstance(heads, int) and heads % layout.ulysses:
            problems.append(f"--parallel {layout}: the {name} of {folder} has {heads} attention heads "
                            f"({name}/config.json {declared.heads_key}), which {layout.ulysses} ranks cannot split "
                            f"evenly; use a ulysses degree that divides {heads}, or add ulysses_anything")
    return problems


def request_problems(engine, params, runtime) -> list[str]:
    """Request fields a --parallel run of ``engine`` refuses, as "field: message" lines."""
    layout = parse(getattr(runtime, "parallel", "off"))
    if layout is None:
        return []
    split_fields = engine.context_parallel.split_fields if engine.context_parallel else ()
    problems = []
    if getattr(params, "cache", None) is not None:
        # each rank's cache hook decides from its own part of the activations whether to skip the blocks: ranks
        # that decide differently wait on each other's all-to-all forever
        problems.append(f"cache: a step cache with --parallel {layout}: each rank would decide alone whether to "
                        "skip a step; drop cache or --parallel")
    for name in ("controls", "reference_images"):
        if getattr(params, name, None) and name not in split_fields:
            problems.append(f"{name}: not with --parallel {layout} (ControlNet residuals and IP-Adapter attention "
                            "are not split across ranks); drop one of them")
    return problems


def gathered_order(mask, first: int, second: int, degree: int):
    """A joint key mask ``[..., first * degree + second * degree]`` laid out as ``[first | second]`` (e.g. video |
    text), reordered as Ulysses gathers keys whose two parts were each split on the ranks: ``[first_0, second_0,
    first_1, second_1, ...]`` (``first`` and ``second``: one rank's token counts). A model that builds one mask
    over its joint sequence needs it in this order under the split (HunyuanVideo's, Chroma's)."""
    import torch

    whole_first = first * degree
    parts = []
    for r in range(degree):
        parts.append(mask[..., r * first:(r + 1) * first])
        parts.append(mask[..., whole_first + r * second:whole_first + (r + 1) * second])
    return torch.cat(parts, dim=-1)
