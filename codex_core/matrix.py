"""The preset matrix (engine x task x mode), the generated docs/param-matrix.md and the engine
catalog. Torch-free.

Modes are the engines' own vocabulary; the matrix's columns are every mode any listed engine
honours or declares unsupported. Every engine x task x mode either has a preset or a reason:

- a mode the engine honours (``Engine.modes``) needs ``presets/<engine>/[<variant>/]<task>.<mode>.yaml``
  (``<task>.yaml`` for normal), in every variant folder where the engine has variants;
- a mode it does not honour shows as "unsupported" with ``Engine.unsupported_reason(mode)``.

The project's own engines are those of the installed plugin distributions whose source is this
checkout's ``plugins/`` folder (all installed engines when codex-core runs from a wheel).
``python -m codex_core.matrix --write`` (or ``codex docs param-matrix > docs/param-matrix.md``)
regenerates the checked-in docs, ``--write-catalog`` the engine catalog; tests fail when stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from . import presets, registry
from .engine import BASELINE_MODE, Engine
from .params import ordered_fields

REPO = Path(__file__).resolve().parents[1]
DOC_PATH = REPO / "docs" / "param-matrix.md"
CATALOG_PATH = Path(__file__).resolve().parent / "engine_catalog.json"


def preset_name(task: str, mode: str) -> str:
    return f"{task}.yaml" if mode == BASELINE_MODE else f"{task}.{mode}.yaml"


def modes_of(engines: Iterable[Engine]) -> list[str]:
    """Every mode the engines honour or declare unsupported: normal first, then in order of appearance."""
    found = [BASELINE_MODE]
    for engine in engines:
        for mode in (*engine.modes, *engine.mode_unsupported):
            if mode not in found:
                found.append(mode)
    return found if len(found) > 1 else []


def _folders(spec: Engine) -> list[tuple[str | None, Path | None]]:
    if spec.presets_dir is None:
        return [(None, None)]
    if spec.variants:
        return [(variant, spec.presets_dir / variant) for variant in spec.variants]
    return [(None, spec.presets_dir)]


def mode_matrix(specs: Iterable[Engine] | None = None, modes: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per engine x task x mode: status "preset", "missing" or "unsupported".

    The modes are every installed engine's (``modes_of``) unless given."""
    specs = sorted(specs if specs is not None else registry.engines().values(), key=lambda s: s.key)
    modes = modes or modes_of(registry.engines().values()) or [BASELINE_MODE]
    rows = []
    for spec in specs:
        for task in spec.tasks:
            for mode in modes:
                row: dict[str, Any] = {"engine": spec.key, "task": task, "mode": mode}
                reason = spec.unsupported_reason(mode)
                if reason:
                    row.update(status="unsupported", reason=reason, files=[])
                    rows.append(row)
                    continue
                name = preset_name(task, mode)
                found, missing = [], []
                for variant, folder in _folders(spec):
                    relative = "/".join(filter(None, [spec.key, variant, name]))
                    (found if folder is not None and (folder / name).is_file() else missing).append(relative)
                if missing:
                    row.update(status="missing", reason=f"no preset {', '.join(missing)}", files=found)
                else:
                    row.update(status="preset", reason=None, files=found)
                rows.append(row)
    return rows


def matrix_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a table with one line per engine x task and one column per mode."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        if row["status"] == "preset":
            text = "preset" + (f" ({len(row['files'])} variants)" if len(row["files"]) > 1 else "")
        elif row["status"] == "missing":
            text = "MISSING"
        else:
            text = "unsupported"
        cells.setdefault((row["engine"], row["task"]), {})[row["mode"]] = text
    columns = list(dict.fromkeys(row["mode"] for row in rows))
    return ["engine", "task", *columns], [[engine, task, *(modes[m] for m in columns)]
                                          for (engine, task), modes in cells.items()]


def unsupported_reasons(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(engine, mode, reason) once per engine and mode."""
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        if row["status"] in ("unsupported", "missing"):
            seen.setdefault((row["engine"], row["mode"]), row["reason"])
    return [(engine, mode, reason) for (engine, mode), reason in seen.items()]


# --- docs/param-matrix.md ---------------------------------------------------------------------


def project_distributions() -> set[str] | None:
    """The distributions of this checkout's plugins/*/pyproject.toml (None when not run from a checkout)."""
    folder = REPO / "plugins"
    if not folder.is_dir():
        return None
    names = set()
    for pyproject in folder.glob("*/pyproject.toml"):  # [project] name = "..." (tomllib is 3.11+)
        match = re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M)
        if match:
            names.add(match.group(1))
    return names


def first_party_specs() -> list[Engine]:
    """The installed engines of this checkout's plugins (not whatever else is installed), by key."""
    own = project_distributions()
    return sorted((engine for engine in registry.engines().values() if own is None or engine.distribution in own),
                  key=lambda engine: engine.key)


def engine_catalog_json() -> str:
    """codex_core/engine_catalog.json: engine key -> distribution of the project's own engines."""
    catalog = {engine.key: engine.distribution for engine in first_party_specs()}
    return json.dumps({"comment": "Generated by `codex docs engine-catalog`; install hints for engines that are "
                                  "not installed. Do not edit by hand.", "engines": catalog}, indent=2) + "\n"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _type(prop: dict[str, Any]) -> str:
    options = prop.get("anyOf", [prop])
    names = []
    for option in options:
        if "$ref" in option:
            names.append("object (" + option["$ref"].rsplit("/", 1)[-1] + ")")
        elif "enum" in option or "const" in option:
            names.append("string")
        else:
            names.append(option.get("type", "any"))
    return " or ".join(dict.fromkeys(names))


def _range(prop: dict[str, Any]) -> str:
    parts = []
    for option in prop.get("anyOf", [prop]):
        if "enum" in option:
            parts.append(", ".join(json.dumps(v) for v in option["enum"]))
        bounds = [f"{sign} {option[key]}" for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                             ("maximum", "<="), ("exclusiveMaximum", "<"))
                  if key in option]
        if bounds:
            parts.append(" and ".join(bounds))
    return "; ".join(parts)


def _preset_values(spec: Engine, task: str) -> dict[str, list[str]]:
    """field -> ["25", "<mode>: 4", ...]: the normal preset value(s), then each mode preset's."""
    values: dict[str, list[str]] = {}
    variants = list(spec.variants) or [None]
    for mode in (BASELINE_MODE, *spec.modes):
        for variant in variants:
            folder = spec.presets_dir / variant if spec.presets_dir and variant else spec.presets_dir
            if folder is None or not (folder / preset_name(task, mode)).is_file():
                continue
            data = presets.load_preset(folder / preset_name(task, mode))
            label = ":".join(filter(None, [variant, None if mode == BASELINE_MODE else mode]))
            for name, value in data.items():
                values.setdefault(name, []).append(f"{label}: {json.dumps(value)}" if label else json.dumps(value))
    return values


def _task_section(spec: Engine, task: str) -> list[str]:
    model = spec.params_model(task)
    schema = model.model_json_schema()
    properties, required = schema.get("properties", {}), set(schema.get("required", []))
    preset_values = _preset_values(spec, task)
    normal_filled = set(presets.merged(spec, task, variant=spec.variants[0] if spec.variants else None))
    lines = [f"### {spec.key} {task}", "",
             "| field | required | type | range / allowed | default | preset values | description |",
             "|---|---|---|---|---|---|---|"]
    for name in ordered_fields(model):
        prop = properties[name]
        if name in required:
            needed = "preset fills" if name in normal_filled else "yes"
        else:
            needed = "no"
        default = _cell(json.dumps(prop["default"])) if "default" in prop else ""
        lines.append("| " + " | ".join([f"`{name}`", needed, _cell(_type(prop)), _cell(_range(prop)), default,
                                        _cell(", ".join(preset_values.get(name, []))),
                                        _cell(prop.get("description", ""))]) + " |")
    nested = [(key, value) for key, value in sorted(schema.get("$defs", {}).items())
              if value.get("type") == "object" and "properties" in value]
    for key, sub in nested:
        lines += ["", f"`{key}` (an object):", ""]
        for field_name, prop in sub["properties"].items():
            needed = "required" if field_name in sub.get("required", []) else "optional"
            extra = [p for p in (_range(prop), f"default {_cell(json.dumps(prop['default']))}" if "default" in prop else "") if p]
            lines.append(f"- `{field_name}` ({needed}, {_type(prop)}{''.join('; ' + e for e in extra)}): "
                         f"{_cell(prop.get('description', ''))}")
    return lines + [""]


def param_matrix_markdown(specs: list[Engine] | None = None) -> str:
    specs = specs if specs is not None else first_party_specs()
    rows = mode_matrix(specs)
    header, table = matrix_table(rows)
    lines = ["# Request fields and speed modes per engine and task", "",
             "<!-- Generated by `codex docs param-matrix > docs/param-matrix.md` (or "
             "`python -m codex_core.matrix --write`); do not edit by hand: tests/test_matrix.py fails "
             "when it is stale. -->", "",
             "Fields come from each engine's request model (its JSON Schema, as `codex schema ENGINE TASK` "
             "prints it); \"preset fills\" marks a required field the task's preset provides. Preset values: "
             "the normal preset's value, then `mode: value` for a speed-mode preset and `variant: value` where "
             "the engine has checkpoint variants. A request's own value always wins over a preset.", "",
             "## Speed modes", "",
             "`codex presets --matrix` prints this table. A mode an engine honours has a preset "
             "`presets/<engine>/[<variant>/]<task>.<mode>.yaml`; a checkpoint that does not support it runs in "
             "normal mode with `info.mode_ignored_reason`.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines += ["", "Unsupported modes:", ""]
    lines += [f"- {engine} `{mode}`: {_cell(reason)}" for engine, mode, reason in unsupported_reasons(rows)]
    lines.append("")
    for spec in specs:
        lines += [f"## {spec.key}", "", f"{spec.description} (package `{spec.distribution or '?'}`). "
                  f"Tasks: {', '.join(spec.tasks)}. Modes: {', '.join(spec.all_modes) or BASELINE_MODE}."
                  + (f" Variants: {', '.join(spec.variants)}." if spec.variants else ""), ""]
        for task in spec.tasks:
            lines += _task_section(spec, task)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codex_core.matrix", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH} instead of printing")
    parser.add_argument("--write-catalog", action="store_true", help=f"write {CATALOG_PATH} too")
    args = parser.parse_args(argv)
    text = param_matrix_markdown()
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.write_catalog:
        CATALOG_PATH.write_text(engine_catalog_json(), encoding="utf-8")
        print(f"wrote {CATALOG_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
