"""The plugin API is declared: what codex_core (and the kit, codex_diffusers) export, versioned and documented.
A plugin under plugins/ that imports anything else of the core fails here, by file and line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import codex_core
import codex_diffusers

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
DOCS = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def imports_of(path: Path, package: str) -> list[tuple[int, str, str | None]]:
    """(line, module, name) for each import of ``package`` or its submodules in ``path`` (name None: a module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names
                      if alias.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == package:
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def outside_the_api(package, sources: list[Path]) -> list[str]:
    """Every import of ``package`` in ``sources`` that is not one of its exports or API modules."""
    allowed_modules = {package.__name__, *package.API_MODULES}
    exported = set(package.__all__)
    found = []
    for path in sources:
        for line, module, name in imports_of(path, package.__name__):
            where = f"{path.relative_to(ROOT)}:{line}"
            if module not in allowed_modules:
                found.append(f"{where}: {module}" + (f" ({name})" if name else ""))
            elif module == package.__name__ and name is not None and name not in exported:
                found.append(f"{where}: {module}.{name}")
    return found


def plugin_sources(exclude: str | None = None) -> list[Path]:
    return [path for path in sorted(PLUGINS.rglob("*.py"))
            if not (exclude and path.is_relative_to(PLUGINS / exclude))]


def test_no_plugin_imports_the_core_outside_its_api():
    found = outside_the_api(codex_core, plugin_sources())
    assert not found, "imports of codex_core outside its API (export the name, or use an exported one):\n" + \
        "\n".join(found)


def test_no_engine_plugin_imports_the_kit_outside_its_api():
    """The kit's own modules may use each other; every other plugin uses the kit's API."""
    found = outside_the_api(codex_diffusers, plugin_sources(exclude="codex-diffusers"))
    assert not found, "imports of codex_diffusers outside its API:\n" + "\n".join(found)


def test_the_check_catches_an_import_outside_the_api(tmp_path):
    sample = ROOT / "plugins" / "_template" / "tests" / "__api_check_sample.py"
    sample.write_text("from codex_core import Engine, registry\nfrom codex_core.model_cache import cache\n"
                      "import codex_core.testing\n")
    try:
        found = outside_the_api(codex_core, [sample])
    finally:
        sample.unlink()
    assert [entry.split(": ", 1)[1] for entry in found] == ["codex_core.registry", "codex_core.model_cache (cache)"]


def test_the_apis_are_versioned():
    for package in (codex_core, codex_diffusers):
        assert re.fullmatch(r"\d+\.\d+", package.API_VERSION)
        assert all(__import__(module, fromlist=["_"]) for module in package.API_MODULES)


@pytest.mark.parametrize("name", [f"{package.__name__}.{name}" for package in (codex_core, codex_diffusers)
                                  for name in package.__all__ if not name.startswith("__")])
def test_every_export_is_documented(name):
    short = re.escape(name.split(".")[-1])
    named = re.search(rf"`{short}[`(]", DOCS) or re.search(rf"^from \S+ import .*\b{short}\b", DOCS, re.M)
    assert named, f"docs/plugins.md does not name `{name.split('.')[-1]}` ({name})"
