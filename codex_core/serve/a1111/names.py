"""A1111's sampler and schedule-type names on the A1111 API: every one is taken, and what ran is reported.

The names and what each family runs for them are the registered ``SamplerName`` tables of vocabulary
"a1111" (the diffusers kit's A1111 1.10 and Forge lists). A request is translated as A1111 reads it,
then run with ``sampler_fallback: "nearest"``, so the job runs the exact sampler where the engine has
one and the nearest otherwise; the job's info and the A1111 ``info`` string say what was asked, what
ran and why (``sampler_in``, ``scheduler_in``, ``sampler_effective``, ``scheduler_effective``,
``sampler_warning``). As A1111 reads a request:

- no ``sampler_name`` (nor ``sampler_index``) is "Euler", A1111's API default;
- "DPM++ 2M Karras" is sampler "DPM++ 2M" with schedule type "Karras", whatever ``scheduler`` says;
- "Automatic" (or none) is the sampler's own schedule in A1111: Karras for DPM++ 2M, Exponential for
  DPM++ 2M SDE, even spacing for Euler (the kit's table says which);
- DDIM, PLMS and UniPC run on their own timesteps whatever schedule type is asked;
- a name A1111 does not know runs its default sampler (DPM++ 2M) or schedule (Automatic), as A1111 does;
  here with a warning.
"""

from __future__ import annotations

from typing import Any

from ...errors import ParamError, UsageError
from ...samplers import AUTOMATIC, SamplerName, resolve
from ..bodies import excerpt

VOCABULARY = "a1111"
DEFAULT_SAMPLER = "Euler"  # A1111's sampler_index default, when a request names no sampler
# What A1111's /schedulers says of each schedule type besides its name and label (modules/sd_schedulers.py)
DEFAULT_RHO = {"karras": 7.0, "polyexponential": 1.0}
NEEDS_INNER_MODEL = {"uniform", "sgm_uniform", "simple", "normal", "ddim", "beta", "turbo"}
# A1111's samplers whose own "scheduler" option its /samplers shows (the others use the model's schedule)
OPTION_SCHEDULES = {"Karras": "karras", "Exponential": "exponential"}


def _names(engine, kind: str) -> list[SamplerName]:
    from ...registry import sampler_names_for

    return [n for n in sampler_names_for(engine) if n.vocabulary == VOCABULARY and n.kind == kind]


def _by_spelling(names: list[SamplerName]) -> dict[str, SamplerName]:
    return {spelling.casefold(): name for name in reversed(names) for spelling in name.spellings}


def _text(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise UsageError(f"{field}: got {excerpt(value)}; a name from GET /sdapi/v1/{field.split('_')[0]}s")
    return value


def translate(body: dict[str, Any], engine, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Codex request fields for an A1111 body's sampler and schedule type, and what was asked (for the reply)."""
    if not engine.sampler_family or "sampler" not in engine.params_model(task).model_fields:
        return {}, {}
    sampler_in = _text(body.get("sampler_name"), "sampler_name") or _text(body.get("sampler_index"), "sampler_index")
    scheduler_in = _text(body.get("scheduler"), "scheduler")
    samplers, schedules = _by_spelling(_names(engine, "sampler")), _by_spelling(_names(engine, "schedule"))
    notes = []
    sampler_name, schedule_name = sampler_in or DEFAULT_SAMPLER, scheduler_in or AUTOMATIC
    entry = samplers.get(sampler_name.casefold())
    if entry is None:  # "DPM++ 2M Karras": the schedule type named in the sampler wins, as in A1111
        for spelling in sorted(schedules, key=len, reverse=True):
            base = sampler_name[: -len(spelling) - 1]
            if sampler_name.casefold().endswith(" " + spelling) and base.casefold() in samplers:
                entry, schedule_name = samplers[base.casefold()], schedules[spelling].name
                break
    if entry is None and not _native(engine, task, "sampler", sampler_name) and _names(engine, "sampler"):
        entry = _names(engine, "sampler")[0]  # A1111 lists its default first
        notes.append(f"sampler {sampler_name!r} is not an A1111 sampler: A1111 runs its default, {entry.name!r}")
    if schedule_name.casefold() not in schedules and not _native(engine, task, "scheduler", schedule_name):
        notes.append(f"scheduler {schedule_name!r} is not an A1111 schedule type: A1111 runs {AUTOMATIC!r}")
        schedule_name = AUTOMATIC
    if entry is not None and entry.fixed_schedule and schedule_name.casefold() != AUTOMATIC.casefold():
        notes.append(f"scheduler {schedule_name!r}: A1111 runs {entry.name} on its own timesteps whatever the "
                     "schedule type")
        schedule_name = AUTOMATIC
    if entry is not None and schedule_name.casefold() == AUTOMATIC.casefold():
        schedule_name = entry.automatic or AUTOMATIC  # A1111's "Automatic" for this sampler
    request = {"sampler": entry.name if entry else sampler_name, "scheduler": schedule_name,
               "sampler_fallback": "nearest"}
    return request, {"sampler_in": sampler_in, "scheduler_in": scheduler_in, "notes": notes}


def _native(engine, task: str, kind: str, name: str) -> bool:
    """Whether ``name`` is one of the engine's own sampler (or schedule-type) names, spelt as Codex spells it."""
    from ...registry import samplers_for

    found = samplers_for(engine, task)[0 if kind == "sampler" else 1]
    return name.casefold() in {spelling.casefold() for item in found for spelling in (item.name, *item.aliases)}


def reply_fields(asked: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """What the A1111 ``info`` string says of the sampler: as asked, as it ran (the job's info), and why."""
    if not asked:
        return {}
    warnings = [*asked["notes"], *([info["sampler_warning"]] if info.get("sampler_warning") else [])]
    return {"sampler_in": asked["sampler_in"], "scheduler_in": asked["scheduler_in"],
            "sampler_effective": info.get("sampler_effective"), "scheduler_effective": info.get("scheduler_effective"),
            "sampler_warning": "; ".join(warnings) or None}


def sampler_rows(engine) -> list[dict[str, Any]]:
    """``GET /sdapi/v1/samplers``: every A1111 and Forge sampler, each of which the engine runs exactly or as the
    nearest; ``options.scheduler`` where A1111 gives the sampler a schedule type of its own."""
    return [{"name": n.name, "aliases": list(n.aliases),
             "options": {"scheduler": OPTION_SCHEDULES[n.automatic]} if n.automatic in OPTION_SCHEDULES else {}}
            for n in _names(engine, "sampler")]


def scheduler_rows(engine, task: str = "txt2img") -> list[dict[str, Any]]:
    """``GET /sdapi/v1/schedulers``: A1111's schedule types, each with the A1111 samplers that run it exactly on this
    engine (``codex_samplers``): Karras is not offered for a sampler that would run without it."""
    from ...registry import sampler_names_for, samplers_for

    natives, schedule_types = samplers_for(engine, task)
    names = sampler_names_for(engine)
    rows = []
    for schedule in _names(engine, "schedule"):
        exact = []
        for sampler in _names(engine, "sampler"):
            if sampler.fixed_schedule and schedule.name.casefold() != AUTOMATIC.casefold():
                continue  # A1111 itself runs it on its own timesteps
            automatic = schedule.name.casefold() == AUTOMATIC.casefold()
            scheduler = (sampler.automatic or AUTOMATIC) if automatic else schedule.name
            try:
                choice = resolve(engine.sampler_family, sampler.name, scheduler, {}, engine.key, task, natives,
                                 schedule_types, names, "nearest")
            except ParamError:  # what it maps to needs a python package that is missing: it runs nowhere
                continue
            if "scheduler" not in choice.approximate:
                exact.append(sampler.name)
        rows.append({"name": schedule.name, "label": schedule.label or schedule.name,
                     "aliases": list(schedule.aliases) or None, "default_rho": DEFAULT_RHO.get(schedule.name, -1),
                     "need_inner_model": schedule.name in NEEDS_INNER_MODEL, "codex_samplers": exact})
    return rows
