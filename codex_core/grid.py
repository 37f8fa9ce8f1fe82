"""Grids (A1111's X/Y/Z plot): one request swept over up to three axes, and one labelled grid image.

An axis is a request field and its values (``seed``, ``steps``, ``cfg``, ``sampler``, ``scheduler``,
any other field of the engine's request; a dotted path reaches into one: ``controls.0.scale``, the first
control's scale), or ``prompt_sr``: A1111's "Prompt S/R", whose first value
is searched for in the prompt (and negative prompt) and each value put in its place. Every cell is
an ordinary batch item (validated, run, resumed like any other, into its own run folder); once all
have run, ``<out>/grids/<id>.png`` puts the first image of each cell in place, x across, y down, z
side by side, with the values on the margins and the axes in its ``codex_grid`` PNG text chunk.
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from .batch_items import Item
from .errors import UsageError

AXES = ("x", "y", "z")
PROMPT_SR = "prompt_sr"
GRID_FIELDS = ("id", "engine", "task", "request", "model", "formats", "preset", *AXES)
GRID_KEY = "codex_grid"


@dataclass
class Axis:
    name: str  # x, y or z
    field: str
    values: list[Any]

    def labels(self) -> list[str]:
        if self.field == PROMPT_SR:
            return [str(value) for value in self.values]
        return [f"{self.field}: {value}" for value in self.values]

    def describe(self) -> dict[str, Any]:
        return {"axis": self.name, "field": self.field, "values": self.values, "labels": self.labels()}


@dataclass
class Grid:
    id: str
    line: int
    spec: dict[str, Any]  # engine, task, request and the optional model, formats, preset
    axes: list[Axis]

    def cells(self) -> list[tuple[tuple[int, int, int], str, dict[str, Any]]]:
        """((x, y, z) indices, the cell's item id, its request) for every cell, z then y then x."""
        sizes = [len(axis.values) for axis in self.axes] + [1] * (3 - len(self.axes))
        found = []
        for zi, yi, xi in product(range(sizes[2]), range(sizes[1]), range(sizes[0])):
            index = (xi, yi, zi)
            request = dict(self.spec["request"])
            for axis, at in zip(self.axes, index):
                request = _apply(request, axis, axis.values[at])
            suffix = "".join(f"{axis.name}{at}" for axis, at in zip(self.axes, index))
            found.append((index, f"{self.id}-{suffix}", request))
        return found

    def items(self) -> list:
        return [Item(self.line, self.spec["engine"], self.spec["task"], request, self.spec.get("model"),
                     tuple(self.spec["formats"]) if self.spec.get("formats") else None, self.spec.get("preset"),
                     cell_id, grid=self.id)
                for _, cell_id, request in self.cells()]


def _apply(request: dict[str, Any], axis: Axis, value: Any) -> dict[str, Any]:
    if axis.field != PROMPT_SR:
        return _set_path(request, axis.field.split("."), value)
    search = axis.values[0]
    return {**request, **{name: request[name].replace(search, str(value)) for name in ("prompt", "negative_prompt")
                          if isinstance(request.get(name), str)}}


def _set_path(data: Any, parts: list[str], value: Any) -> Any:
    """A copy of ``data`` with the field at ``parts`` set: ``controls.0.scale`` is the scale of the first control
    (the request is never changed in place: every cell starts from the same one)."""
    head, rest = parts[0], parts[1:]
    key: Any = int(head) if isinstance(data, list) else head
    copy = list(data) if isinstance(data, list) else dict(data)
    copy[key] = _set_path(data[key], rest, value) if rest else value
    return copy


def _path_problem(request: dict[str, Any], field: str) -> str | None:
    """Why a dotted axis field (``controls.0.scale``) names nothing in the request, or None."""
    data: Any = request
    parts = field.split(".")
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[:depth + 1])
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return f"{field}: the request has no {where}; sweep a field of what it gives (e.g. controls.0.scale " \
                   "with one control)"
    if not isinstance(data, dict):
        return f"{field}: {'.'.join(parts[:-1])} is not a mapping of fields"
    return None


def parse_axis_option(name: str, text: str) -> Axis:
    """``--x FIELD=V1,V2,...`` (each value read as JSON when it is, else as text) or ``FIELD=[JSON list]``."""
    field_name, sep, rest = text.partition("=")
    if not sep or not field_name.strip() or not rest.strip():
        raise UsageError(f"--{name}: {text!r} is not FIELD=VALUES; e.g. --{name} seed=1,2,3 or "
                         f"--{name} 'prompt_sr=red,blue' or --{name} 'cfg=[5, 7.5]'")
    rest = rest.strip()
    if rest.startswith("["):
        try:
            values = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--{name}: {rest!r} is not a JSON list: {exc.msg}") from None
    else:
        values = [_scalar(part.strip()) for part in rest.split(",")]
    return make_axis(name, field_name.strip(), values, f"--{name}")


def _scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def make_axis(name: str, field_name: Any, values: Any, where: str) -> Axis:
    if not isinstance(field_name, str) or not field_name:
        raise UsageError(f"{where}: field: got {field_name!r}; expected a request field name or {PROMPT_SR}")
    if not isinstance(values, list) or not values:
        raise UsageError(f"{where}: values: got {values!r}; expected a non-empty list")
    for value in values:
        if isinstance(value, (dict, list)) or value is None:
            raise UsageError(f"{where}: values: {value!r} is not a number or text")
        if value == "":
            raise UsageError(f"{where}: values: an empty value")
    if len({json.dumps(v) for v in values}) != len(values):
        raise UsageError(f"{where}: values: {values!r} repeats a value; give each once")
    if field_name == PROMPT_SR and not all(isinstance(v, str) for v in values):
        raise UsageError(f"{where}: {PROMPT_SR}: values: {values!r}; expected text (the first is searched for)")
    return Axis(name, field_name, values)


def parse_grid(data: Any, line: int) -> Grid:
    """A ``grid:`` mapping of a batch file: an item's fields plus x, y, z axes ``{field, values}``."""
    from .batch_items import ID_PATTERN, parse_item

    where = f"line {line}: grid"
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping of engine, task, request and x/y/z axes")
    unknown = [key for key in data if key not in GRID_FIELDS]
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(GRID_FIELDS)}")
    axes = []
    for name in AXES:
        if name not in data:
            continue
        axis = data[name]
        if isinstance(axis, str):
            axes.append(parse_axis_option(name, axis))
            continue
        if not isinstance(axis, dict) or set(axis) != {"field", "values"}:
            raise UsageError(f"{where}: {name}: expected {{field: NAME, values: [...]}} or \"FIELD=V1,V2\", "
                             f"got {axis!r}")
        axes.append(make_axis(name, axis["field"], axis["values"], f"{where}: {name}"))
    item = parse_item({key: value for key, value in data.items() if key not in AXES and key != "id"}, line)
    grid_id = data.get("id")
    if grid_id is not None and (not isinstance(grid_id, str) or not ID_PATTERN.fullmatch(grid_id)):
        raise UsageError(f"{where}: id: got {grid_id!r}; 1 to 100 letters, digits, '.', '_' or '-'")
    return make_grid(item.spec(), axes, line, grid_id, where)


def make_grid(spec: dict[str, Any], axes: list[Axis], line: int, grid_id: str | None, where: str) -> Grid:
    from .batch_items import item_id

    if not axes:
        raise UsageError(f"{where}: no axis; give x (and y, z), e.g. x: {{field: seed, values: [1, 2, 3]}}")
    names = [axis.name for axis in axes]
    if names != list(AXES[:len(axes)]):
        raise UsageError(f"{where}: axes {', '.join(names)}: give x first, then y, then z")
    fields = [axis.field for axis in axes]
    if len(set(fields)) != len(fields):
        raise UsageError(f"{where}: two axes sweep the same field ({', '.join(fields)})")
    for axis in axes:
        problem = _path_problem(spec["request"], axis.field) if "." in axis.field else None
        if problem:
            raise UsageError(f"{where}: {axis.name}: {problem}")
        if axis.field == PROMPT_SR:
            search = axis.values[0]
            prompts = [spec["request"].get(n) for n in ("prompt", "negative_prompt")]
            if not any(isinstance(p, str) and search in p for p in prompts):
                raise UsageError(f"{where}: {axis.name}: {PROMPT_SR}: {search!r} (the first value, searched for) does "
                                 "not occur in the prompt or negative prompt")
    grid_id = grid_id or "grid-" + item_id({**spec, "axes": [axis.describe() for axis in axes]})
    return Grid(grid_id, line, spec, axes)


# -- the grid image -----------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Lines of ``text`` no wider than ``width`` (by words, then by characters)."""
    lines = []
    for chars in range(max(1, len(text)), 0, -1):
        lines = textwrap.wrap(text, chars, break_long_words=True) or [""]
        if all(draw.textlength(line, font=font) <= width for line in lines):
            return lines
    return lines


def _render(grid: Grid, images: dict, by_id: dict[str, dict[str, Any]]):
    """The labelled grid of ``images`` (cell index -> PIL image; a missing one is a grey "failed" cell):
    (canvas, the cells' boxes, the cell size)."""
    from PIL import Image, ImageDraw

    cells = grid.cells()
    cell_w = max(image.width for image in images.values())
    cell_h = max(image.height for image in images.values())
    sizes = [len(axis.values) for axis in grid.axes] + [1] * (3 - len(grid.axes))
    labels = [axis.labels() for axis in grid.axes] + [[""]] * (3 - len(grid.axes))
    font = _font(max(10, min(32, cell_h // 8)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(font.getbbox("Ag")[3]) + 2
    pad = max(2, line_h // 3)
    x_lines = [_wrap(measure, text, font, cell_w - 2) for text in labels[0]] if len(grid.axes) >= 1 else [[]]
    top = max(len(lines) for lines in x_lines) * line_h + 2 * pad
    left = (max(int(measure.textlength(text, font=font)) for text in labels[1]) + 2 * pad) if len(grid.axes) >= 2 else 0
    z_title = line_h + 2 * pad if len(grid.axes) == 3 else 0
    block_w, gap = left + sizes[0] * cell_w, 2 * pad if len(grid.axes) == 3 else 0
    width = sizes[2] * block_w + (sizes[2] - 1) * gap
    height = z_title + top + sizes[1] * cell_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    boxes = []
    for (xi, yi, zi), cell_id, _ in cells:
        x0 = zi * (block_w + gap) + left + xi * cell_w
        y0 = z_title + top + yi * cell_h
        image = images.get((xi, yi, zi))
        if image is None:
            draw.rectangle([x0, y0, x0 + cell_w - 1, y0 + cell_h - 1], fill=(128, 128, 128))
            draw.text((x0 + pad, y0 + pad), "failed", fill="black", font=font)
        else:
            canvas.paste(image, (x0 + (cell_w - image.width) // 2, y0 + (cell_h - image.height) // 2))
        boxes.append({"x": xi, "y": yi, "z": zi, "id": cell_id, "box": [x0, y0, x0 + cell_w, y0 + cell_h],
                      "status": (by_id.get(cell_id) or {}).get("status")})
    for zi in range(sizes[2]):
        block_x = zi * (block_w + gap)
        if z_title:
            draw.text((block_x + left, pad), labels[2][zi], fill="black", font=font)
        for xi, lines in enumerate(x_lines):
            for n, text in enumerate(lines):
                draw.text((block_x + left + xi * cell_w + 1, z_title + pad + n * line_h), text, fill="black", font=font)
        if len(grid.axes) >= 2:
            for yi, text in enumerate(labels[1]):
                draw.text((block_x + pad, z_title + top + yi * cell_h + (cell_h - line_h) // 2), text, fill="black",
                          font=font)
    return canvas, boxes, (cell_w, cell_h)


def compose(grid: Grid, out: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``<out>/grids/<id>.png`` from the cells' first images (image tasks) or ``<out>/grids/<id>.mp4``
    from their frames, side by side (video tasks); what batch.json says about it."""
    from . import registry

    by_id = {record["id"]: record for record in records}
    described = {"id": grid.id, "axes": [axis.describe() for axis in grid.axes], "path": None}
    if registry.get_engine(grid.spec["engine"]).output_kind(grid.spec["task"]) != "image":
        return _compose_video(grid, out, by_id, described)
    from PIL import Image, PngImagePlugin

    cells = grid.cells()
    images = {}
    for index, cell_id, _ in cells:
        record = by_id.get(cell_id) or {}
        path = out / cell_id / "0000.png"
        if record.get("status") in ("done", "skipped") and path.is_file():
            with Image.open(path) as image:
                images[index] = image.convert("RGB")
    if not images:
        return {**described, "status": "failed", "reason": "no cell has an image"}
    canvas, boxes, (cell_w, cell_h) = _render(grid, images, by_id)
    width, height = canvas.size
    record = {"id": grid.id, **{k: grid.spec.get(k) for k in ("engine", "task", "model", "request")},
              "axes": described["axes"], "cell_size": [cell_w, cell_h], "cells": boxes}
    meta = PngImagePlugin.PngInfo()
    meta.add_text(GRID_KEY, json.dumps(record, default=str))
    first = out / cells[0][1] / "0000.png"
    if first.is_file():  # A1111 gives a grid the parameters of its first image
        with Image.open(first) as image:
            if "parameters" in image.info:
                meta.add_text("parameters", image.info["parameters"])
    target = out / "grids" / f"{grid.id}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    canvas.save(tmp, format="PNG", pnginfo=meta)
    os.replace(tmp, target)
    missing = len(cells) - len(images)
    return {**described, "path": str(target), "status": "done" if not missing else "partial",
            "cells": len(cells), "missing": missing, "size": [width, height]}


def _cell_frames(folder: Path) -> list | None:
    """A video cell's frames: its lossless ``frames/`` PNGs when it wrote them, else its video decoded."""
    from PIL import Image

    pngs = sorted((folder / "frames").glob("*.png"))
    if pngs:
        frames = []
        for path in pngs:
            with Image.open(path) as frame:
                frames.append(frame.convert("RGB"))
        return frames
    from .exporters.video import decode_frames

    for name in ("video.mp4", "video.webm", "video.gif"):
        if (folder / name).is_file():
            return list(decode_frames(folder / name))
    return None


def _compose_video(grid: Grid, out: Path, by_id: dict[str, dict[str, Any]], described: dict[str, Any]):
    """``<out>/grids/<id>.mp4``: the cells' videos playing side by side in the labelled grid, frame by frame
    (a cell with fewer frames holds its last one), at the cells' fps; the axes in the MP4's comment tag.
    Silent: cells' sound tracks are left out, and the grid's record (``audio``) says so."""
    from .exporters.video import CONTAINERS, encode, ffmpeg_problem

    problem = ffmpeg_problem()
    if problem:
        return {**described, "status": "skipped", "reason": f"the grid video needs ffmpeg: {problem}"}
    cells = grid.cells()
    clips, fps, sounding = {}, None, []
    for index, cell_id, _ in cells:
        record = by_id.get(cell_id) or {}
        if record.get("status") not in ("done", "skipped"):
            continue
        frames = _cell_frames(out / cell_id)
        if frames:
            clips[index] = frames
            info = json.loads((out / cell_id / "info.json").read_text(encoding="utf-8"))
            if fps is None:
                fps = (info.get("video") or {}).get("fps") or info["request"]["fps"]
            if (info.get("audio") or {}).get("codecs"):
                sounding.append(cell_id)
    if not clips:
        return {**described, "status": "failed", "reason": "no cell has a video"}
    count = max(len(frames) for frames in clips.values())
    canvases, boxes, cell = [], [], None
    for t in range(count):
        canvas, boxes, cell = _render(grid, {index: frames[min(t, len(frames) - 1)] for index, frames in clips.items()},
                                      by_id)
        if canvas.width % 2 or canvas.height % 2:  # H.264 in yuv420p needs even sides: a white margin
            from PIL import Image

            even = Image.new("RGB", (canvas.width + canvas.width % 2, canvas.height + canvas.height % 2), "white")
            even.paste(canvas, (0, 0))
            canvas = even
        canvases.append(canvas)
    # several tracks at once would be noise, and no one of them belongs to the whole grid: the grid is silent
    audio = (f"left out: the grid video is silent; the {len(sounding)} cells with sound keep it in their own run "
             "folders") if sounding else None
    record = {"id": grid.id, **{k: grid.spec.get(k) for k in ("engine", "task", "model", "request")},
              "axes": described["axes"], "cell_size": list(cell), "cells": boxes, "frames": count, "fps": fps,
              **({"audio": audio} if audio else {})}
    container = CONTAINERS["mp4"]
    target = out / "grids" / f"{grid.id}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.mp4")
    try:
        encode(tmp, canvases, fps, container, [*container.output_params, "-metadata",
                                               "comment=" + json.dumps({GRID_KEY: record}, default=str)])
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    missing = len(cells) - len(clips)
    return {**described, "path": str(target), "status": "done" if not missing else "partial", "cells": len(cells),
            "missing": missing, "size": list(canvases[0].size), "frames": count, "fps": fps,
            **({"audio": audio} if audio else {})}

