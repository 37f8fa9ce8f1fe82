"""docs/samplers.md: each engine's sampler and schedule-type names, and what every other vocabulary's name (A1111's
and Forge's) runs there, generated from the registered tables (``codex docs samplers``). Torch-free.

``python -m codex_core.sampler_docs --write`` (or ``codex docs samplers > docs/samplers.md``) regenerates it;
tests/test_sampler_names.py fails when it is stale.
"""

from __future__ import annotations

import sys
from typing import Any

from . import registry
from .matrix import REPO, _cell, first_party_specs
from .samplers import describe

DOC_PATH = REPO / "docs" / "samplers.md"

INTRO = """\
`sampler` and `scheduler` take Codex's own names (the first tables: what each runs, per sampler family) and
every A1111 1.10 and Forge name, label and alias, in any case (the tables after them). A name marked
**exact** runs the same sampler or schedule as in A1111, so any request takes it (`"k_euler_a"`, `"sgm_uniform"`,
`"Normal"`). A name marked **nearest** has no exact equivalent on that engine: a request runs it only with
`"sampler_fallback": "nearest"`, and then runs what the table says, with `info.json`'s `sampler_warning` saying
why; without it (`"strict"`, the default) the request is refused with the allowed names. The A1111 API
(`/sdapi/v1`) always asks for the nearest, and reads `Automatic` as A1111 does for each sampler (the
"A1111's Automatic" column). "No X here": the engine (or task) does not run the family's nearest, X, and runs
the next nearest. `codex samplers ENGINE [--task TASK]` prints the same for one engine."""


def _families(specs) -> dict[str, list]:
    found: dict[str, list] = {}
    for spec in specs:
        if spec.sampler_family:
            found.setdefault(spec.sampler_family, []).append(spec)
    return found


def _own_section(family: str, specs) -> list[str]:
    samplers, schedules = registry.samplers()
    table = describe(family, samplers, schedules)
    lines = [f"## {family} samplers ({', '.join(spec.key for spec in specs)})", "",
             "| sampler | diffusers scheduler | flags | schedule types |", "|---|---|---|---|"]
    lines += [f"| {row['sampler']} | {row['class']} | {_cell(row['flags']) if row['flags'] else ''} | "
              f"{', '.join(row['schedule_types'])} |" for row in table["samplers"]]
    lines += ["", "| schedule type | flags |", "|---|---|"]
    lines += [f"| {name} | {_cell(flags) if flags else ''} |" for name, flags in table["schedule_types"].items()]
    narrowed = []
    for spec in specs:
        for task in spec.tasks:
            own_samplers, own_schedules = registry.samplers_for(spec, task)
            if len(own_samplers) < len(table["samplers"]) or len(own_schedules) < len(table["schedule_types"]):
                narrowed.append(f"{spec.key} {task}: {', '.join(s.name for s in own_samplers)} with "
                                f"{', '.join(s.name for s in own_schedules)}")
    if narrowed:
        lines += ["", "Engines that run fewer of them: " + "; ".join(narrowed) + "."]
    return lines + [""]


def _rows(spec, task: str) -> list[tuple]:
    """(kind, name, aliases, runs, exact, why) for every other-vocabulary name on one engine and task."""
    names = registry.sampler_names_for(spec)
    table = describe(spec.sampler_family, *registry.samplers_for(spec, task), names, spec.key, task)
    by_key = {(n.kind, n.name): n for n in names}
    rows = []
    for row in table["names"]:
        name = by_key[(row["kind"], row["name"])]
        why = name.reason
        if row["runs"] is not None and row["runs"] != name.runs[0]:
            why = f"no {name.runs[0]} here" + (f"; {why}" if why and not name.exact else "")
        automatic = (name.automatic or "Automatic") if name.kind == "sampler" else None
        rows.append((row["kind"], row["name"], ", ".join(filter(None, [name.label if name.label != name.name
                                                                       else None, *name.aliases])),
                     row["runs"] or "-", row["exact"], why, automatic))
    return rows


def _names_sections(specs) -> list[str]:
    """One section per group of engines (and tasks) whose names run the same."""
    groups: dict[tuple, list[str]] = {}
    for spec in specs:
        per_task = {task: tuple(_rows(spec, task)) for task in spec.tasks}
        if len(set(per_task.values())) == 1:
            groups.setdefault(next(iter(per_task.values())), []).append(spec.key)
            continue
        for task, rows in per_task.items():
            groups.setdefault(rows, []).append(f"{spec.key} {task}")
    lines = []
    for rows, where in groups.items():
        lines += [f"## A1111 and Forge names on {', '.join(where)}", "",
                  "| sampler | aliases | runs | | A1111's Automatic | why |", "|---|---|---|---|---|---|"]
        lines += [_line(row, automatic=True) for row in rows if row[0] == "sampler"]
        lines += ["", "| schedule type | label, aliases | runs | | why |", "|---|---|---|---|---|"]
        lines += [_line(row) for row in rows if row[0] == "schedule"]
        lines.append("")
    return lines


def _line(row: tuple, automatic: bool = False) -> str:
    kind, name, aliases, runs, exact, why, auto = row
    cells = [_cell(name), _cell(aliases), runs, "exact" if exact else "nearest",
             *([auto] if automatic else []), _cell(why)]
    return "| " + " | ".join(cells) + " |"


def samplers_markdown(specs: list[Any] | None = None) -> str:
    specs = specs if specs is not None else first_party_specs()
    lines = ["# Sampler and schedule-type names per engine", "",
             "<!-- Generated by `codex docs samplers > docs/samplers.md` (or `python -m codex_core.sampler_docs "
             "--write`); do not edit by hand: tests/test_sampler_names.py fails when it is stale. -->", "",
             INTRO, ""]
    for family, members in sorted(_families(specs).items()):
        lines += _own_section(family, members)
    lines += _names_sections(specs)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    text = samplers_markdown()
    if "--write" in (argv if argv is not None else sys.argv[1:]):
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
