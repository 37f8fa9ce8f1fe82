"""``codex new-engine NAME``: a new engine package from the template (torch-free).

The template (``plugins/_template/`` in the source tree, ``codex_diffusers/template/`` in the wheel)
is a complete engine package whose names are placeholders: ``__NAME__`` (the engine key),
``__PACKAGE__`` (its Python package), ``__DIST__`` (its distribution) and ``__CLASS__`` (its engine
class). Rendering replaces them in file names and contents; the result installs with pip and
passes the conformance suite as it is (tests/test_template.py builds, installs and tests one).
"""

from __future__ import annotations

import keyword
import re
import shutil
import tempfile
from pathlib import Path

from codex_core import UsageError

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def template_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "template", here.parents[2] / "_template"):  # wheel, then source checkout
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise UsageError("the engine template is missing from this installation of codex-diffusers",
                     hint="reinstall codex-diffusers")


CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def class_name(name: str) -> str:
    """The engine class for an engine key: each part capitalised, a short versioned acronym in capitals
    (``sd3`` -> ``SD3Engine``, ``ltx2_video`` -> ``LTX2VideoEngine``, ``my_model`` -> ``MyModelEngine``)."""
    def part(text: str) -> str:
        letters = text.rstrip("0123456789")
        return text.upper() if text != letters and len(letters) <= 3 else text.capitalize()

    return "".join(part(piece) for piece in name.split("_") if piece) + "Engine"


def placeholders(name: str, engine_class: str | None = None) -> dict[str, str]:
    return {"__NAME__": name, "__PACKAGE__": f"codex_{name}", "__DIST__": f"codex-{name.replace('_', '-')}",
            "__CLASS__": engine_class or class_name(name)}


def _render(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def new_engine(name: str, dest_root: Path, engine_class: str | None = None) -> Path:
    """Write the package for engine ``name`` into ``dest_root/<distribution>/`` and return that folder."""
    if not NAME.match(name) or keyword.iskeyword(name):
        raise UsageError(f"NAME: {name!r} is not an engine key; use lower-case letters, digits and _ "
                         "(starting with a letter), e.g. my_model")
    if engine_class is not None and (not CLASS_NAME.match(engine_class) or keyword.iskeyword(engine_class)):
        raise UsageError(f"--class-name: {engine_class!r} is not a class name; e.g. {class_name(name)}")
    values = placeholders(name, engine_class)
    dest = Path(dest_root) / values["__DIST__"]
    if dest.exists():
        raise UsageError(f"--dest: {dest} exists already; choose another --dest or NAME")
    source = template_dir()
    # written next to the destination, renamed into place when complete: nothing half-written remains
    Path(dest_root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest_root))
    try:
        for path in sorted(source.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            target = staging / _render(str(path.relative_to(source)), values)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.write_text(_render(path.read_text(encoding="utf-8"), values), encoding="utf-8")
            except UnicodeDecodeError:
                shutil.copyfile(path, target)
        staging.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
