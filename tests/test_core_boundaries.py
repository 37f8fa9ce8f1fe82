"""What the core may not know or need: no heavy imports, no model family, every import declared."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from codex_core import registry

CORE = Path(__file__).resolve().parents[1] / "codex_core"
SOURCES = sorted(CORE.rglob("*.py"))
HEAVY = {"torch", "diffusers", "transformers", "numpy"}
# import name -> distribution, where they differ
DISTRIBUTION_OF = {"PIL": "pillow", "yaml": "pyyaml", "pydantic_core": "pydantic-core",
                   "imageio_ffmpeg": "imageio-ffmpeg", "huggingface_hub": "huggingface-hub"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any level (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def declared_distributions() -> set[str]:
    """The core's dependencies and runtime extras (not the dev tools), by distribution name."""
    project = tomllib.loads((CORE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = [req for name, reqs in project["optional-dependencies"].items() if name != "dev" for req in reqs]
    return {re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() for req in project["dependencies"] + extras}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE)))
def test_no_heavy_import_at_any_level(path):
    assert not imported_modules(path) & HEAVY


def test_every_import_is_stdlib_the_core_or_declared():
    declared = declared_distributions()
    undeclared = {}
    for path in SOURCES:
        for name in imported_modules(path) - set(sys.stdlib_module_names) - {"codex_core", "__future__"}:
            if DISTRIBUTION_OF.get(name, name).lower().replace("_", "-") not in declared:
                undeclared.setdefault(name, []).append(str(path.relative_to(CORE)))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def family_words() -> set[str]:
    """Engine keys, family names and plugin package names of every installed engine."""
    words = set()
    for engine in registry.engines().values():
        words.update({engine.key, engine.family, engine.family.replace("-", " ")})
        if engine.distribution:
            words.add(engine.distribution.removeprefix("codex-"))
    return {word for word in words if word}


# A tool's folder name, not a model family: A1111 and Forge keep every checkpoint in models/Stable-diffusion.
A1111_CHECKPOINTS_FOLDER = "models/Stable-diffusion"


def test_the_core_names_no_engine_or_model_family():
    words = family_words()
    assert {"sd15", "flux", "wan", "hunyuan_video", "svd"} <= words  # the installed plugins were seen
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, words), key=len, reverse=True)) + r")(?![\w-])",
                         re.I)
    found = [f"{path.relative_to(CORE)}:{number}: {line.strip()}"
             for path in SOURCES for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if pattern.search(line.replace(A1111_CHECKPOINTS_FOLDER, ""))]
    assert not found, "\n".join(found)


def test_importing_the_core_imports_nothing_heavy():
    import subprocess

    script = ("import sys, codex_core, codex_core.cli, codex_core.orchestrator, codex_core.registry; "
              "codex_core.registry.engines(); print(sorted(m for m in %r if m in sys.modules))" % sorted(HEAVY))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
