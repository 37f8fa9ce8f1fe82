"""``samplers`` and ``schedulers``: A1111's names, and what each runs on the current model's engine (``names``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..bodies import StrictJSONRoute
from ..dependencies import StateDep
from . import names
from .checkpoints import _engine

router = APIRouter(prefix="/sdapi/v1", route_class=StrictJSONRoute)


@router.get("/samplers")
def samplers(state: StateDep) -> list[dict[str, Any]]:
    return names.sampler_rows(_engine(state))


@router.get("/schedulers")
def schedulers(state: StateDep) -> list[dict[str, Any]]:
    return names.scheduler_rows(_engine(state))
