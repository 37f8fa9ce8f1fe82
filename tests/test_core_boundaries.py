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
                   "imageio_ffmpeg": "imageio-ffmpeg", "cv2": "opencv-python-headless"}
# The one module that may import numpy, inside a function only: OpenCV's canny takes numpy arrays.
LAZY_NUMPY = "default_plugins/preprocessors.py"


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


def module_level_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports outside any function or class."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE)))
def test_no_heavy_import_at_any_level(path):
    if path.relative_to(CORE).as_posix() == LAZY_NUMPY:
        assert imported_modules(path) & HEAVY == {"numpy"} and not module_level_imports(path) & HEAVY
    else:
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
    # a family word followed by a version ("wan22_5b", "wan22-5b") is still the family
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, words), key=len, reverse=True))
                         + r")(?:\d[\d.]*(?![A-Za-z])|(?![\w-]))", re.I)
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


def diffusers_vocabulary() -> dict[str, re.Pattern]:
    """What only the diffusers kit may say: the library's scheduler classes, its attention and offload calls, the
    file that marks its model folders, and the Hugging Face hub's environment variables."""
    import diffusers

    schedulers = sorted(name for name in dir(diffusers) if name.endswith("Scheduler") and name[0].isupper())
    assert "EulerDiscreteScheduler" in schedulers and "FlowMatchEulerDiscreteScheduler" in schedulers
    return {
        "a diffusers scheduler class": re.compile(r"\b(" + "|".join(schedulers) + r")\b"),
        "a diffusers call": re.compile(r"\b(set_attention_backend|enable_model_cpu_offload|enable_group_offload|"
                                       r"enable_sequential_cpu_offload|compile_repeated_blocks|from_pretrained|"
                                       r"from_single_file|from_pipe|enable_layerwise_casting)\b"),
        "a diffusers file": re.compile(r"model_index\.json"),
        "a Hugging Face environment variable": re.compile(r"\bHF_[A-Z_]+"),
    }


def test_the_core_speaks_no_diffusers():
    """The kit owns diffusers (schedulers, placements, attention, the hub): the core names none of it."""
    vocabulary = diffusers_vocabulary()
    found = [f"{path.relative_to(CORE)}:{number}: {what}: {line.strip()}"
             for path in SOURCES for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             for what, pattern in vocabulary.items() if pattern.search(line)]
    assert not found, "\n".join(found)


def test_the_vocabulary_check_catches_what_it_forbids():
    lines = ['"EulerDiscreteScheduler"', "pipe.set_attention_backend(name)", '(folder / "model_index.json")',
             'os.environ.setdefault("HF_HUB_OFFLINE", "1")']
    vocabulary = diffusers_vocabulary()
    assert all(any(p.search(line) for p in vocabulary.values()) for line in lines)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of its own package it imports, at any level (functions included), leaving out
    imports under ``if TYPE_CHECKING:`` (they never run)."""
    modules = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for statement in node.body for inner in ast.walk(statement)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_inside_the_core():
    assert circles(import_graph(CORE)) == []


def test_the_circle_check_finds_a_circle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import thing\n")  # at function level: still a circle
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    assert circles(import_graph(package)) == [["pkg.a", "pkg.b"]]
