"""``samplers`` and ``schedulers``: the names the current model's engine takes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..bodies import StrictJSONRoute
from ..dependencies import StateDep
from .checkpoints import _engine

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


@router.get("/samplers")
def samplers(state: StateDep) -> list[dict[str, Any]]:
    from ...registry import samplers_for

    engine = _engine(state)
    names = [sampler.name for sampler in samplers_for(engine)[0] if sampler.family == engine.sampler_family]
    return [{"name": name, "aliases": [], "options": {}} for name in names]


@router.get("/schedulers")
def schedulers(state: StateDep) -> list[dict[str, Any]]:
    from ...registry import samplers_for

    engine = _engine(state)
    names = [s.name for s in samplers_for(engine)[1] if s.family == engine.sampler_family]
    return [{"name": name.lower(), "label": name, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for name in names]
