"""Sampler policy: user-facing sampler / schedule-type names -> a scheduler class name + flags.

The tables are data registered through ``codex_register_samplers`` (the diffusers kit registers the
A1111/Forge names and the flow-matching ones); the core knows no scheduler class, only the policy.
Resolution happens before any model loads and never falls back silently: a name that is unknown
for the engine's sampler family, or a schedule type the sampler's scheduler class cannot honour, is
a validation error listing what is allowed. ``info.json`` reports what was asked and what ran
(``sampler_in``/``scheduler_in``, ``sampler_effective``/``scheduler_effective``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ParamError

AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class SamplerDef:
    name: str
    family: str  # "discrete" or "flow"
    scheduler_class: str  # the scheduler class the engine's library builds (e.g. a diffusers class name)
    flags: Mapping[str, Any] = field(default_factory=dict)
    # constructor arguments of scheduler_class that schedule types may set
    accepts: frozenset[str] = frozenset()
    # scheduler constructor argument -> request field that supplies it (e.g. flow_shift), when present
    param_flags: Mapping[str, str] = field(default_factory=dict)
    # scheduler constructor argument -> the key of the checkpoint's own scheduler config that supplies it when
    # no request field does (a flow UniPC's flow_shift from a flow-matching Euler config's shift)
    config_flags: Mapping[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # python modules the scheduler class needs
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleType:
    name: str
    family: str
    flags: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchedulerChoice:
    """The outcome of resolution, applied later with ``cls.from_config(checkpoint_config, **flags)``."""

    sampler_in: str | None
    scheduler_in: str | None
    sampler: str
    schedule: str
    scheduler_class: str
    flags: Mapping[str, Any]
    # constructor argument -> checkpoint scheduler config key, for arguments the flags leave out
    config_flags: Mapping[str, str] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {
            "sampler_in": self.sampler_in,
            "scheduler_in": self.scheduler_in,
            "sampler_effective": self.sampler,
            "scheduler_effective": {"schedule": self.schedule, "class": self.scheduler_class, "flags": dict(self.flags)},
        }


def _index(items, family):
    table = {}
    for item in items:
        if item.family == family:
            for name in (item.name, *item.aliases):
                table.setdefault(name.casefold(), item)
    return table


def resolve(
    family: str,
    sampler_in: str | None,
    scheduler_in: str | None,
    params: Mapping[str, Any],
    engine: str,
    task: str,
    samplers: list[SamplerDef],
    schedules: list[ScheduleType],
) -> SchedulerChoice:
    by_name = _index(samplers, family)
    schedule_by_name = _index(schedules, family)
    canonical_samplers = [s.name for s in samplers if s.family == family]
    if sampler_in is None:
        raise ParamError(["sampler: required field is missing (no preset provides it)"
                          f" (allowed: {', '.join(canonical_samplers)})"], engine, task)

    sampler = by_name.get(sampler_in.casefold())
    schedule_name = scheduler_in
    if sampler is None:
        # "DPM++ 2M Karras" = sampler "DPM++ 2M" + schedule type "Karras", as A1111 used to spell it.
        for schedule in (s for s in schedules if s.family == family and s.name != AUTOMATIC):
            for alias in (schedule.name, *schedule.aliases):
                suffix = " " + alias
                if sampler_in.casefold().endswith(suffix.casefold()):
                    base = by_name.get(sampler_in[: -len(suffix)].casefold())
                    if base is None:
                        continue
                    given = schedule_by_name.get((scheduler_in or AUTOMATIC).casefold())
                    if given is not None and given.name not in (AUTOMATIC, schedule.name):
                        raise ParamError([f"sampler: {sampler_in!r} names the schedule type {schedule.name!r} and "
                                          f"scheduler is {scheduler_in!r}: the two conflict; ask for sampler "
                                          f"{base.name!r} with the scheduler you want, or leave scheduler out"],
                                         engine, task)
                    sampler, schedule_name = base, schedule.name
    if sampler is None:
        raise ParamError([f"sampler: unknown sampler {sampler_in!r} for {engine} ({family} sampling); "
                          f"allowed: {', '.join(canonical_samplers)}"], engine, task,
                         hint=f"`codex samplers {engine}` lists them")
    missing = [module for module in sampler.requires if importlib.util.find_spec(module) is None]
    if missing:
        raise ParamError([f"sampler: {sampler.name!r} needs the python package(s) {', '.join(missing)}"],
                         engine, task, hint=f"pip install {' '.join(missing)}")

    schedule = schedule_by_name.get((schedule_name or AUTOMATIC).casefold())
    usable = [s.name for s in schedules if s.family == family and set(s.flags) <= sampler.accepts]
    if schedule is None:
        raise ParamError([f"scheduler: unknown schedule type {schedule_name!r}; allowed with {sampler.name!r}: "
                          f"{', '.join(usable)}"], engine, task)
    if not set(schedule.flags) <= sampler.accepts:
        raise ParamError([f"scheduler: {schedule.name!r} does not apply to sampler {sampler.name!r} "
                          f"({sampler.scheduler_class} has no {', '.join(sorted(set(schedule.flags) - sampler.accepts))}); "
                          f"allowed with {sampler.name!r}: {', '.join(usable)}"], engine, task)

    flags = dict(sampler.flags)
    for argument, param_name in sampler.param_flags.items():
        if params.get(param_name) is not None:
            flags[argument] = params[param_name]
    if schedule.name != AUTOMATIC:
        # An explicit schedule type replaces whatever schedule the checkpoint's config turns on (a
        # Karras-configured checkpoint asked for "Simple" gets simple sigmas, not an error or Karras): every
        # switch another schedule type of the family turns on is turned off first.
        switches = dict.fromkeys(flag for other in schedules if other.family == family
                                 for flag, value in other.flags.items() if value is True)
        flags.update({flag: False for flag in switches if flag in sampler.accepts})
    flags.update(schedule.flags)
    from_config = {argument: key for argument, key in sampler.config_flags.items() if argument not in flags}
    return SchedulerChoice(sampler_in, scheduler_in, sampler.name, schedule.name, sampler.scheduler_class, flags,
                           from_config)


def describe(family: str, samplers: list[SamplerDef], schedules: list[ScheduleType]) -> dict[str, Any]:
    rows = []
    for sampler in (s for s in samplers if s.family == family):
        rows.append({
            "sampler": sampler.name,
            "class": sampler.scheduler_class,
            "flags": dict(sampler.flags),
            "schedule_types": [s.name for s in schedules if s.family == family and set(s.flags) <= sampler.accepts],
        })
    return {"family": family, "samplers": rows,
            "schedule_types": {s.name: dict(s.flags) for s in schedules if s.family == family}}
