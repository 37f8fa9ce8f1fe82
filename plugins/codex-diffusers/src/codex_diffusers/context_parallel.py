"""Context parallelism, declared by an engine (``DiffusersEngine.context_parallel``) and applied by the kit.

An engine that can split one job's attention across ranks (``--parallel``, ``codex_core.parallel``)
declares which of its denoisers are split and, for a model class that diffusers ships without a
``_cp_plan``, the plan the kit supplies (built lazily: plans name torch types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class ContextParallel:
    # pipeline components split by --parallel (every denoiser the run uses: both experts of Wan 2.2 A14B)
    denoisers: tuple[str, ...] = ("transformer",)
    # component -> a function returning its cp plan, where the model class declares no ``_cp_plan``
    plans: Mapping[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    # the config key of a denoiser's attention head count (Ulysses splits heads: it must divide)
    heads_key: str = "num_attention_heads"
