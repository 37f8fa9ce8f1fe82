"""`codex preprocess`: run one control-image preprocessor alone (canny, invert, ...) and write its PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .base import echo_json, echo_table, handle_errors

DEFAULT_OUT = Path("artifacts/preprocessed")


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``--param k=v`` pairs as a dict; each value is read as JSON (50, 2.5, true), else taken as text."""
    from ..errors import UsageError

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param: {pair!r} is not KEY=VALUE", hint="e.g. --param low_threshold=50")
        key = key.strip()
        if key in values:
            raise UsageError(f"--param {key}: given twice")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


def _range(prop: dict) -> str:
    bounds = [f"{prop[k]}" for k in ("minimum", "maximum") if k in prop]
    return f"{prop.get('default')!r}" + (f" ({'..'.join(bounds)})" if len(bounds) == 2 else "")


@click.command()
@click.argument("type_", metavar="TYPE", required=False)
@click.argument("image", required=False)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help=f"Folder for the result [default: ./{DEFAULT_OUT}].")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the preprocessor (repeatable), e.g. --param low_threshold=50.")
@click.option("--list", "show_list", is_flag=True, help="List the preprocessors: name, parameters, needed files.")
@click.option("--json", "as_json", is_flag=True, help="With --list: print JSON instead of a table.")
@handle_errors
def preprocess(type_, image, out, params, show_list, as_json):
    """Run a control-image preprocessor on IMAGE and write the result as a PNG; prints its path.

    TYPE is a preprocessor's name (`codex preprocess --list`); what it writes is what a request's
    controls[].preprocess feeds the ControlNet. Annotators that need weights look for them in the
    models folders of kind annotators and name the file when it is missing; depth runs a transformers
    depth-estimation folder there (named depth-anything*/dpt*, e.g. Depth-Anything-V2-Small-hf).

    \b
    Examples:
      codex preprocess --list
      codex preprocess canny photo.jpg --param low_threshold=50 --param high_threshold=150
      codex preprocess invert drawing.png --out control/
      codex preprocess depth photo.jpg
    """
    from .. import preprocessors
    from ..errors import UsageError

    if show_list:
        rows = [found.describe() for _, found in sorted(preprocessors.installed().items())]
        if as_json:
            echo_json(rows)
        else:
            echo_table([[row["name"], ", ".join(f"{name}={_range(prop)}" for name, prop in row["parameters"].items())
                         or "-", ", ".join(row["needs"]) or "-", row["description"]] for row in rows],
                       ["name", "parameters", "needs", "description"])
        return
    if not type_ or not image:
        raise UsageError("give TYPE and IMAGE (or --list)", hint="e.g. codex preprocess canny photo.jpg")
    values = parse_params(params)
    preprocessor = preprocessors.get(type_, "TYPE")  # name, parameters and weights are checked before reading
    preprocessors.validated(preprocessor, values, "--param")
    preprocessors.weight_files(preprocessor, "TYPE")
    result = preprocessors.run(type_, _open(image), values, "TYPE", "--param")
    folder = out or DEFAULT_OUT
    path = folder / f"{Path(image).stem}.{type_}.png"
    _write_png(result, path, {"preprocess": type_, "preprocess_params": preprocessor.parameters.model_validate(
        values).model_dump(), "image": str(Path(image).resolve())})
    click.echo(str(path))


def _open(image: str):
    from pydantic_core import PydanticCustomError

    from ..errors import UsageError
    from ..images import open_image

    try:
        return open_image(image)
    except PydanticCustomError as exc:
        raise UsageError(f"IMAGE: {exc.message()}") from None


def _write_png(result, path: Path, record: dict) -> None:
    """Written under a temporary name and renamed: no half-written PNG is ever left; what made it is in its
    ``codex`` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("codex", json.dumps(record))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        result.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
