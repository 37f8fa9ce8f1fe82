"""The conformance suite's checks of an engine's declaration against what its pipeline really does.

Each check runs the engine through codex (the CLI, in process, ``--model tiny``) and fails with a
message that says what differs and how to fix it:

- ``check_stride``: a size at an odd multiple of the declared ``size_multiple`` runs at exactly that
  size (a stride declared too small fails here, where the author's own bad-request test would only
  encode the same wrong belief), and a size half a stride off is refused before loading;
- ``check_fields_reach``: every field the engine adds to the core's reaches the pipeline: changed,
  it changes the pipeline's call arguments, its scheduler or its output (a field never passed, e.g.
  one whose default happens to equal the pipeline's, fails here);
- ``check_presets``: every preset file of every variant, mode and profile validates against the
  task's params (a typo in a variant the tiny model is not is caught here).

``pipeline_calls`` records the arguments of the pipeline calls codex makes (the real call runs).
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from codex_core import ParamError, get_engine, validate_params
from codex_core.testing import cli_run

# Fields of the kit's shared mixins: each has tests of its own in the kit and the first-party engines, and
# a change needs a file (a LoRA, a VAE) or a checkpoint (a speed mode), so the field check leaves them out.
KIT_FIELDS = {
    "loras": "a LoRA file (the kit's and codex-sd's LoRA tests)",
    "vae": "a VAE file (codex-sd's VAE tests)",
    "cache": "a step cache (tests/test_step_caches.py counts the attention each skips)",
    "mode": "a speed mode needs a checkpoint or LoRA for it (the speed-mode tests)",
    "mode_lora": "an accelerator LoRA file (the speed-mode tests)",
    "controls": "a ControlNet folder (each family's ControlNet tests compare with diffusers' ControlNet pipelines)",
    "reference_images": "an IP-Adapter file and image encoder (codex-sd's test_ip_adapter.py compares with diffusers' "
                        "load_ip_adapter)",
}


# -- what a pipeline call was --------------------------------------------------------------------------------


@contextmanager
def pipeline_calls() -> Iterator[list[dict[str, Any]]]:
    """Every pipeline call codex makes in the block, recorded as ``{"pipeline", "arguments", "scheduler"}``
    (``describe``d values, comparable and printable); the real call runs as always."""
    from .. import pipelines

    real, calls = pipelines.call, []

    def recording(pipe, job, **arguments):
        calls.append({"pipeline": type(pipe).__name__, "arguments": describe(arguments),
                      "scheduler": {"class": type(pipe.scheduler).__name__, **describe(dict(pipe.scheduler.config))}})
        return real(pipe, job, **arguments)

    pipelines.call = recording
    try:
        yield calls
    finally:
        pipelines.call = real


def describe(value: Any) -> Any:
    """A value as a comparable, printable record: images and tensors by size and a digest of their content."""
    if isinstance(value, dict):
        return {str(key): describe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    if isinstance(value, Image.Image):
        return f"<image {value.mode} {value.size[0]}x{value.size[1]} {hashlib.sha256(value.tobytes()).hexdigest()[:12]}>"
    if hasattr(value, "detach") and hasattr(value, "shape"):  # a tensor
        data = value.detach().float().cpu().numpy()
        return f"<tensor {tuple(value.shape)} {str(value.dtype)} {hashlib.sha256(data.tobytes()).hexdigest()[:12]}>"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def run_outputs(engine: str, task: str, request: dict[str, Any], out: Path) -> tuple[int, str, dict | None, list]:
    """(exit code, stderr, info, output arrays) of one run; video tasks give their frames."""
    video = get_engine(engine).output_kind(task) == "video"
    result = cli_run(["run", engine, task, "--model", "tiny", "--out", str(out), "-q", "--json", json.dumps(request),
                      *(["--format", "frames"] if video else [])])
    if result.exit_code:
        return result.exit_code, result.stderr, None, []
    data = json.loads(result.stdout)
    files = sorted(f for f in data["files"] if f.endswith(".png"))
    return 0, result.stderr, data["info"], [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _sizes(images: list) -> set[tuple[int, int]]:
    return {(array.shape[1], array.shape[0]) for array in images}


# -- the stride ----------------------------------------------------------------------------------------------


def check_stride(engine_key: str, task: str, request: dict[str, Any], out: Path) -> None:
    engine = get_engine(engine_key)
    model = engine.params_model(task)
    if "width" not in model.model_fields:
        return
    stride = model.size_multiple
    base = request.get("width") or 64
    odd = max(1, base // stride) | 1  # an odd multiple near the case's own size
    width = height = stride * odd
    asked = {**request, "width": width, "height": height}
    code, stderr, info, images = run_outputs(engine_key, task, asked, out / "on_stride")
    if code:
        raise AssertionError(
            f"{engine_key} {task}: size_multiple is {stride}, but {width}x{height} (an odd multiple of it) failed "
            f"(exit {code}): {stderr.strip()[-600:]}\nThe pipeline needs a larger stride: declare the one it really "
            f"has (a multiple of {stride}) in the params' size_multiple")
    if _sizes(images) != {(width, height)}:
        raise AssertionError(
            f"{engine_key} {task}: size_multiple is {stride} and {width}x{height} was asked, but the pipeline made "
            f"{sorted(_sizes(images))}: it rounds sizes to a larger stride; declare that stride in size_multiple")
    if stride > 1:
        off = {**request, "width": width + stride // 2, "height": height}
        result = cli_run(["run", engine_key, task, "--model", "tiny", "--out", str(out / "off"), "--json",
                          json.dumps(off)])
        if result.exit_code != 2 or "nearest valid values" not in result.stderr:
            raise AssertionError(f"{engine_key} {task}: width {off['width']} (half a stride off {stride}) was not "
                                 f"refused before loading: exit {result.exit_code}, {result.stderr.strip()[-300:]}")


# -- every field reaches the pipeline -------------------------------------------------------------------------


def engine_fields(model) -> list[str]:
    """The fields the engine (or its mixins) adds to the core's task params."""
    core = set()
    for cls in model.__mro__:
        if cls.__module__ == "codex_core.params" and hasattr(cls, "model_fields"):
            core |= set(cls.model_fields)
    return [name for name in model.model_fields if name not in core]


def _bounds(field) -> tuple[float | None, float | None]:
    low = high = None
    for item in field.metadata:
        low = getattr(item, "ge", getattr(item, "gt", low))
        high = getattr(item, "le", getattr(item, "lt", high))
    return low, high


def alternative(model, name: str, current: Any) -> tuple[bool, Any]:
    """(True, a valid value other than ``current``) for a scalar field, from its type and range; (False, why)."""
    field = model.model_fields[name]
    kind = field.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kinds = [member for member in typing.get_args(kind) if member is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else None
    if typing.get_origin(kind) is typing.Literal:
        others = [value for value in typing.get_args(kind) if value != current]
        return (True, others[0]) if others else (False, "a Literal with one value")
    low, high = _bounds(field)
    if kind is bool:
        return True, not current
    if kind in (int, float):
        if current is None:
            value = low if low is not None else 1
            value = value + (1 if kind is int else 0.5) if high is None or value + 1 <= high else value
        elif kind is int:
            value = current + 1 if high is None or current + 1 <= high else current - 1
        else:
            value = round(current * 1.5 if current else 0.5, 6)
            if high is not None and value > high:
                value = round((current + (low or 0.0)) / 2, 6)
        return True, kind(value)
    return False, f"its type {field.annotation} has no default alternative"


def check_fields_reach(engine_key: str, task: str, request: dict[str, Any], out: Path,
                       changes: dict[str, Any] | None = None, exempt: dict[str, str] | None = None) -> None:
    """Each engine field, changed (``changes``: field -> value, or (value, other request entries)), changes the
    pipeline's call arguments, its scheduler or its output; ``exempt``: field -> why it is checked elsewhere."""
    engine = get_engine(engine_key)
    model = engine.params_model(task)
    exempt = {**KIT_FIELDS, **(exempt or {})}
    changes = changes or {}
    runs: dict[str, tuple] = {}

    def base(extra: dict[str, Any]) -> tuple:
        """(request, its pipeline calls, its outputs, its effective request) of the case with ``extra``."""
        key = json.dumps(extra, sort_keys=True)
        if key not in runs:
            with pipeline_calls() as calls:
                code, stderr, info, images = run_outputs(engine_key, task, {**request, **extra}, out / f"base{len(runs)}")
            assert code == 0, f"{engine_key} {task}: the case {extra or ''} itself failed: {stderr}"
            runs[key] = (list(calls), images, info["request"])
        return runs[key]

    problems = []
    for name in engine_fields(model):
        if name in exempt:
            continue
        value, extra = changes[name] if isinstance(changes.get(name), tuple) else (changes.get(name), {})
        base_calls, base_images, effective = base(extra)
        current = effective.get(name)
        if name not in changes:
            known, value = alternative(model, name, current)
            if not known:
                problems.append(f"{name}: {value}; give the check a value (field_changes) or say why it is checked "
                                "elsewhere (fields_exempt)")
                continue
        with pipeline_calls() as calls:
            code, stderr, _, images = run_outputs(engine_key, task, {**request, **extra, name: value},
                                                  out / f"field_{name}")
        if code:
            problems.append(f"{name}={value!r}: refused (exit {code}: {stderr.strip()[-200:]}); give the check a "
                            "value this task takes (field_changes)")
        elif calls == base_calls and len(images) == len(base_images) and all(
                np.array_equal(a, b) for a, b in zip(images, base_images)):
            problems.append(f"{name}: {current!r} -> {value!r} changed neither the pipeline's arguments nor its "
                            "scheduler nor the output: it never reaches the pipeline (map it in `arguments`, "
                            "`extra_arguments` or a sampler's param_flags), or say why in fields_exempt")
    called = next(iter(runs.values()))[0] if runs else []
    assert not problems, f"{engine_key} {task}:\n  " + "\n  ".join(problems) + \
        f"\nthe case's pipeline arguments: {called[-1]['arguments'] if called else None}"


# -- every preset file validates ------------------------------------------------------------------------------


def preset_files(engine) -> list[tuple[Path, str, str | None, str | None, str | None]]:
    """(file, task, variant, profile, layer) of every preset file of the engine."""
    root = engine.presets_dir
    found = []
    for path in sorted(root.rglob("*.yaml")) if root and root.is_dir() else []:
        variant = path.parent.name if path.parent != root else None
        name, _, layer = path.name[:-len(".yaml")].partition(".")
        task, _, profile = name.partition("@")
        found.append((path, task, variant, profile or None, layer or None))
    return found


def check_presets(engine_key: str, request_for: Callable[[str], dict[str, Any]]) -> None:
    """Every preset file validates: its task and variant exist, and what it fills together with the presets it
    layers over (a profile or a mode over the task's base), over the task's case request (``request_for``),
    passes the params model and the engine's checks for its variant."""
    from codex_core import preset_values

    engine = get_engine(engine_key)
    problems = []
    for path, task, variant, profile, layer in preset_files(engine):
        where = path.relative_to(engine.presets_dir)
        if task not in engine.tasks:
            problems.append(f"{where}: no task {task!r} (tasks: {', '.join(engine.tasks)})")
            continue
        if variant is not None and variant not in engine.variants:
            problems.append(f"{where}: no variant {variant!r} (variants: {', '.join(engine.variants) or 'none'})")
            continue
        try:
            values = preset_values(engine, task, (layer,) if layer else (), variant, profile)
        except Exception as exc:  # noqa: BLE001  (unreadable YAML: named with its file)
            problems.append(f"{where}: {exc}")
            continue
        model = engine.params_model(task)
        request = {**request_for(task), **values}
        if layer in engine.modes:
            request["mode"] = layer
        try:
            params = validate_params(model, request, engine_key, task)
        except ParamError as exc:
            problems += [f"{where}: {problem}" for problem in exc.problems]
            continue
        problems += [f"{where}: {problem}" for problem in engine.check_request(task, params, variant)]
    assert not problems, f"{engine_key}: preset files that do not validate:\n  " + "\n  ".join(problems)
