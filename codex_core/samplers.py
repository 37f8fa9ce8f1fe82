"""Sampler policy: user-facing sampler / schedule-type names -> a scheduler class name + flags.

The tables are data registered through ``codex_register_samplers`` (the diffusers kit registers the
A1111/Forge names and the flow-matching ones); the core knows no scheduler class, only the policy.
Resolution happens before any model loads. A family's own names (``SamplerDef``, ``ScheduleType``)
run as they are; a name of another tool's vocabulary (``SamplerName``: A1111's "k_euler_a",
"sgm_uniform", "DPM++ 2S a") runs what the table says it is. Strict requests (the default) take a
name only when it runs exactly; a request with ``sampler_fallback: "nearest"`` runs the nearest
sampler and schedule type the engine honours instead and says so (``sampler_warning``). A name no
table knows is an error either way, listing what is allowed. ``info.json`` reports what was asked
and what ran (``sampler_in``/``scheduler_in``, ``sampler_effective``/``scheduler_effective``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ParamError

AUTOMATIC = "Automatic"
FALLBACKS = ("strict", "nearest")  # the request field sampler_fallback
_UNSET = object()


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
    # what the class always does, though it takes no such argument (a single-step solver that always spaces
    # its timesteps evenly): a schedule type asking for exactly that applies without passing it
    implied: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleType:
    name: str
    family: str
    flags: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplerName:
    """A sampler or schedule-type name of another tool's vocabulary (A1111's and Forge's) and what a family
    runs for it: ``runs``, the family's own names, most faithful first; the first one an engine takes runs."""

    name: str
    family: str
    runs: tuple[str, ...]
    kind: str = "sampler"  # or "schedule"
    # runs[0] is the same algorithm: a translation, which strict requests take too. Otherwise the nearest,
    # which only a request with sampler_fallback "nearest" takes, and says so with ``reason``.
    exact: bool = False
    reason: str = ""
    aliases: tuple[str, ...] = ()
    vocabulary: str = "a1111"
    label: str | None = None  # the tool's display name where it has one besides ``name`` ("SGM Uniform")
    # a sampler's: the family's schedule type that its tool's "Automatic" means for it (A1111: DPM++ 2M -> Karras)
    automatic: str | None = None
    # a sampler its tool runs on its own timesteps whatever schedule type is asked (A1111's DDIM, PLMS, UniPC)
    fixed_schedule: bool = False

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, *((self.label,) if self.label else ()), *self.aliases)


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
    fallback: str = "strict"
    warning: str | None = None  # what runs instead of what was asked, and why (sampler_fallback "nearest")
    approximate: frozenset[str] = frozenset()  # which of "sampler", "scheduler" the warning is about

    def info(self) -> dict[str, Any]:
        return {
            "sampler_in": self.sampler_in,
            "scheduler_in": self.scheduler_in,
            "sampler_effective": self.sampler,
            "scheduler_effective": {"schedule": self.schedule, "class": self.scheduler_class,
                                    "flags": dict(self.flags)},
            "sampler_fallback": self.fallback,
            "sampler_warning": self.warning,
        }


def _index(items, family):
    table = {}
    for item in items:
        if item.family == family:
            for name in getattr(item, "spellings", (item.name, *item.aliases)):
                table.setdefault(name.casefold(), item)
    return table


def takes(sampler: SamplerDef, schedule: ScheduleType) -> bool:
    """Whether the sampler's scheduler class honours every flag of the schedule type."""
    return all(flag in sampler.accepts or sampler.implied.get(flag, _UNSET) == value
               for flag, value in schedule.flags.items())


@dataclass
class _Context:
    family: str
    engine: str
    task: str
    samplers: list[SamplerDef]
    schedules: list[ScheduleType]
    names: list[SamplerName]
    nearest: bool
    notes: list[str] = field(default_factory=list)
    approximate: set[str] = field(default_factory=set)

    def note(self, kind: str, line: str) -> None:
        self.notes.append(line)
        self.approximate.add(kind)

    def native(self, kind: str) -> dict[str, Any]:
        return _index(self.samplers if kind == "sampler" else self.schedules, self.family)

    def foreign(self, kind: str) -> dict[str, SamplerName]:
        return _index([n for n in self.names if n.kind == kind], self.family)

    def error(self, line: str, hint: str | None = None) -> ParamError:
        return ParamError([line], self.engine, self.task, hint=hint)


def resolve(
    family: str,
    sampler_in: str | None,
    scheduler_in: str | None,
    params: Mapping[str, Any],
    engine: str,
    task: str,
    samplers: list[SamplerDef],
    schedules: list[ScheduleType],
    names: list[SamplerName] = (),
    fallback: str = "strict",
) -> SchedulerChoice:
    """The scheduler for a request's sampler and schedule type. ``samplers`` and ``schedules`` are what the engine
    takes (``registry.samplers_for``), ``names`` the other vocabularies' names of its family."""
    ctx = _Context(family, engine, task, [s for s in samplers if s.family == family],
                   [s for s in schedules if s.family == family], [n for n in names if n.family == family],
                   fallback == "nearest")
    if sampler_in is None:
        raise ctx.error("sampler: required field is missing (no preset provides it)"
                        f" (allowed: {', '.join(s.name for s in ctx.samplers)})")
    sampler, schedule_name = _split(ctx, sampler_in, scheduler_in)
    sampler = _pick_sampler(ctx, sampler, sampler_in)
    missing = [module for module in sampler.requires if importlib.util.find_spec(module) is None]
    if missing:
        raise ctx.error(f"sampler: {sampler.name!r} needs the python package(s) {', '.join(missing)}",
                        hint=f"pip install {' '.join(missing)}")
    schedule = _pick_schedule(ctx, sampler, schedule_name)

    flags = dict(sampler.flags)
    for argument, param_name in sampler.param_flags.items():
        if params.get(param_name) is not None:
            flags[argument] = params[param_name]
    if schedule.name != AUTOMATIC:
        # An explicit schedule type replaces whatever schedule the checkpoint's config turns on (a
        # Karras-configured checkpoint asked for "Simple" gets simple sigmas, not an error or Karras): every
        # switch another schedule type of the family turns on is turned off first.
        switches = dict.fromkeys(flag for other in ctx.schedules
                                 for flag, value in other.flags.items() if value is True)
        flags.update({flag: False for flag in switches if flag in sampler.accepts})
    flags.update({flag: value for flag, value in schedule.flags.items() if flag in sampler.accepts})
    from_config = {argument: key for argument, key in sampler.config_flags.items() if argument not in flags}
    return SchedulerChoice(sampler_in, scheduler_in, sampler.name, schedule.name, sampler.scheduler_class, flags,
                           from_config, fallback, "; ".join(ctx.notes) or None, frozenset(ctx.approximate))


def _split(ctx: _Context, sampler_in: str, scheduler_in: str | None) -> tuple[str, str | None]:
    """"DPM++ 2M Karras" = sampler "DPM++ 2M" + schedule type "Karras", as A1111 used to spell it."""
    if _known(ctx, "sampler", sampler_in):
        return sampler_in, scheduler_in
    native, foreign = ctx.native("schedule"), ctx.foreign("schedule")
    for spelling in sorted({*native, *foreign}, key=len, reverse=True):
        schedule = native.get(spelling) or foreign[spelling]
        suffix = " " + spelling
        base = sampler_in[: -len(suffix)]
        if (schedule.name.casefold() == AUTOMATIC.casefold() or not sampler_in.casefold().endswith(suffix)
                or not _known(ctx, "sampler", base)):
            continue
        given = scheduler_in if scheduler_in is not None and scheduler_in.casefold() != AUTOMATIC.casefold() else None
        if given is not None and given.casefold() not in {s.casefold() for s in _spellings(schedule)}:
            raise ctx.error(f"sampler: {sampler_in!r} names the schedule type {schedule.name!r} and scheduler is "
                            f"{scheduler_in!r}: the two conflict; ask for sampler {base!r} with the scheduler you "
                            "want, or leave scheduler out")
        return base, schedule.name
    return sampler_in, scheduler_in


def _spellings(item) -> tuple[str, ...]:
    return getattr(item, "spellings", (item.name, *item.aliases))


def _known(ctx: _Context, kind: str, name: str) -> bool:
    return name.casefold() in ctx.native(kind) or name.casefold() in ctx.foreign(kind)


def _pick_sampler(ctx: _Context, name: str, sampler_in: str) -> SamplerDef:
    natives = ctx.native("sampler")
    allowed = ", ".join(s.name for s in ctx.samplers)
    native, foreign = natives.get(name.casefold()), ctx.foreign("sampler").get(name.casefold())
    if native is not None:
        if ctx.nearest and foreign is not None and not foreign.exact and foreign.runs[:1] == (native.name,):
            ctx.note("sampler", f"sampler {sampler_in!r} is approximate: {foreign.reason}")
        return native
    if foreign is None:
        raise ctx.error(f"sampler: unknown sampler {sampler_in!r} for {ctx.engine} ({ctx.family} sampling); "
                        f"allowed: {allowed}", hint=f"`codex samplers {ctx.engine}` lists them")
    available = [natives[n.casefold()] for n in foreign.runs if n.casefold() in natives]
    if foreign.exact and available and available[0].name.casefold() == foreign.runs[0].casefold():
        return available[0]
    chosen = available[0] if available else ctx.samplers[0]
    # one of the family's own names that this engine (or task) does not run, or a name with no exact equivalent
    narrowed = foreign.exact or foreign.runs[0].casefold() == name.casefold()
    why = (foreign.reason if chosen.name == foreign.runs[0] else
           f"{ctx.engine} {ctx.task} does not run {foreign.runs[0]!r}" + (f"; {foreign.reason}" if not narrowed
                                                                          and foreign.reason else ""))
    if not ctx.nearest:
        what = ("does not run with" if narrowed else "has no exact equivalent in")
        raise ctx.error(f"sampler: {sampler_in!r} {what} {ctx.engine} {ctx.task}"
                        + ("" if narrowed else f" ({foreign.reason})") + f"; allowed: {allowed}",
                        hint=f"\"sampler_fallback\": \"nearest\" runs {chosen.name!r} instead")
    ctx.note("sampler", f"sampler {sampler_in!r} runs as {chosen.name!r}: {why}")
    return chosen


def _pick_schedule(ctx: _Context, sampler: SamplerDef, name: str | None) -> ScheduleType:
    natives = ctx.native("schedule")
    automatic = natives.get(AUTOMATIC.casefold()) or ScheduleType(AUTOMATIC, ctx.family)
    if name is None:
        return automatic
    usable = ", ".join(s.name for s in ctx.schedules if takes(sampler, s))
    native, foreign = natives.get(name.casefold()), ctx.foreign("schedule").get(name.casefold())
    if native is not None:
        if takes(sampler, native):
            if ctx.nearest and foreign is not None and not foreign.exact and foreign.runs[:1] == (native.name,):
                ctx.note("scheduler", f"scheduler {name!r} is approximate: {foreign.reason}")
            return native
        lacking = sorted(flag for flag, value in native.flags.items()
                         if flag not in sampler.accepts and sampler.implied.get(flag, _UNSET) != value)
        line = (f"scheduler: {native.name!r} does not apply to sampler {sampler.name!r} "
                f"({sampler.scheduler_class} has no {', '.join(lacking)})")
        if not ctx.nearest:
            raise ctx.error(f"{line}; allowed with {sampler.name!r}: {usable}")
        ctx.note("scheduler", f"{line}: runs as {AUTOMATIC!r}")
        return automatic
    if foreign is None:
        raise ctx.error(f"scheduler: unknown schedule type {name!r}; allowed with {sampler.name!r}: {usable}")
    available = [natives[n.casefold()] for n in foreign.runs
                 if n.casefold() in natives and takes(sampler, natives[n.casefold()])]
    if foreign.exact and available and available[0].name.casefold() == foreign.runs[0].casefold():
        return available[0]
    chosen = available[0] if available else automatic
    why = (foreign.reason if chosen.name == foreign.runs[0] else
           f"{foreign.runs[0]!r} does not apply to {sampler.name!r} on {ctx.engine}"
           + (f"; {foreign.reason}" if not foreign.exact and foreign.reason else ""))
    if not ctx.nearest:
        raise ctx.error(f"scheduler: {name!r} has no exact equivalent with sampler {sampler.name!r} on {ctx.engine} "
                        f"({why}); allowed with {sampler.name!r}: {usable}",
                        hint=f"\"sampler_fallback\": \"nearest\" runs {chosen.name!r} instead")
    ctx.note("scheduler", f"scheduler {name!r} runs as {chosen.name!r}: {why}")
    return chosen


def describe(family: str, samplers: list[SamplerDef], schedules: list[ScheduleType],
             names: list[SamplerName] = (), engine: str = "engine", task: str = "txt2img") -> dict[str, Any]:
    """The family's names as an engine narrows them, and what each other-vocabulary name runs there."""
    rows = []
    for sampler in (s for s in samplers if s.family == family):
        rows.append({
            "sampler": sampler.name,
            "class": sampler.scheduler_class,
            "flags": dict(sampler.flags),
            "schedule_types": [s.name for s in schedules if s.family == family and takes(sampler, s)],
        })
    return {"family": family, "samplers": rows,
            "schedule_types": {s.name: dict(s.flags) for s in schedules if s.family == family},
            "names": [nearest_row(n, family, samplers, schedules, names, engine, task)
                      for n in names if n.family == family]}


def nearest_row(name: SamplerName, family: str, samplers: list[SamplerDef], schedules: list[ScheduleType],
                names: list[SamplerName], engine: str, task: str) -> dict[str, Any]:
    """What one other-vocabulary name runs on an engine with sampler_fallback "nearest": exact or not, and why."""
    sampler_in, scheduler_in = (name.name, None) if name.kind == "sampler" else (None, name.name)
    if sampler_in is None:  # a schedule type: on the family's sampler that takes the most of them
        sampler_in = max((s for s in samplers if s.family == family),
                         key=lambda s: sum(takes(s, t) for t in schedules if t.family == family)).name
    row = {"vocabulary": name.vocabulary, "kind": name.kind, "name": name.name, "aliases": list(name.aliases),
           "label": name.label}
    try:
        choice = resolve(family, sampler_in, scheduler_in, {}, engine, task, samplers, schedules, names, "nearest")
    except ParamError as exc:  # e.g. the sampler it maps to needs a python package that is not installed
        return {**row, "runs": None, "exact": False, "note": "; ".join(exc.problems)}
    runs = choice.sampler if name.kind == "sampler" else choice.schedule
    return {**row, "runs": runs, "exact": choice.warning is None, "note": choice.warning or name.reason}
