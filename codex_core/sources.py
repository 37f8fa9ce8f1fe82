"""Where model weights come from: a folder, a file, a name in the models folders, a hub repo id or the tiny model.

A hub repo id is looked up by the engine (``Engine.find_repo``: the diffusers kit asks the local
Hugging Face cache). Nothing here reaches the network unless ``download`` is asked for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import model_files
from .errors import ModelNotFoundError, UsageError
from .paths import excerpt, user_path
from .safetensors_header import regular_status

if TYPE_CHECKING:
    from .engine import Engine

TINY = "tiny"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "folder", "file" (a single-file checkpoint), "tiny" or "hub"
    path: Path
    label: str  # what the user asked for, as they would say it again
    repo_id: str | None = None
    found_via: str = "--model"
    config: Path | None = None  # --config: a model folder with the configs a single file lacks
    # --component NAME=FILE: components loaded from their own files in place of the checkpoint's
    components: tuple[tuple[str, Path], ...] = field(default=())

    def cache_key(self) -> tuple:
        return (self.kind, str(self.path), str(self.config), self.components)

    def files(self) -> dict[str, Path]:
        """Every weight file this source reads by itself (single-file checkpoint, component files)."""
        found = {"checkpoint": self.path} if self.kind == "file" else {}
        found.update({f"component:{name}": path for name, path in self.components})
        return found

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "label": self.label, "path": str(self.path),
                                "repo_id": self.repo_id, "found_via": self.found_via}
        if self.config:
            info["config"] = str(self.config)
        if self.components:
            info["components"] = {name: str(path) for name, path in self.components}
        return info


cache_dir = model_files.cache_dir
models_dir = model_files.models_dir


def tiny_path(spec: "Engine", version: str) -> Path:
    return cache_dir() / "tiny" / f"{spec.key}-{version}"


def _slot(spec: "Engine", task: str | None) -> str:
    """The name models are looked up under: the engine key, or ``<engine>_<task>`` for a task with its own checkpoint."""
    return f"{spec.key}_{task}" if task in spec.task_default_repos else spec.key


def _env_name(slot: str) -> str:
    return "CODEX_MODEL_" + re.sub(r"\W", "_", slot).upper()


def _is_model_folder(path: Path, marker: str | None) -> bool:
    return path.is_dir() and (marker is None or (path / marker).is_file())


def _explicit(spec: "Engine", value: str, via: str, download: bool, allow_pickle: bool, marker: str | None,
              tiny_version: str | None) -> ModelSource:
    if value == TINY:
        if tiny_version is None:
            raise UsageError(f"{via}: engine {spec.key!r} has no tiny test model")
        return ModelSource("tiny", tiny_path(spec, tiny_version), TINY, found_via=via)
    path = user_path(value, via)
    if path.exists() and not path.is_dir():  # a file: a weight file, or refused saying what it is (e.g. a FIFO)
        return ModelSource("file", weight_file(path, via, allow_pickle), value, found_via=via)
    if os.path.exists(path):
        if _is_model_folder(path, marker):
            return ModelSource("folder", path.resolve(), value, found_via=via)
        raise UsageError(f"{via}: {excerpt(value)} is not a {spec.key} model folder (no {marker} inside)")
    named = _named_checkpoint(value, via)
    if named is not None:
        if named.path.is_dir():
            return ModelSource("folder", named.path.resolve(), value, found_via=f"{via} (models folder)")
        return ModelSource("file", weight_file(named.path, via, allow_pickle), value, found_via=f"{via} (models folder)")
    if REPO_ID.match(value):
        snapshot = spec.find_repo(value, download, allow_pickle)
        if snapshot is not None:
            return ModelSource("hub", snapshot, value, repo_id=value, found_via=via)
        raise ModelNotFoundError(
            f"{via}: {value!r} is not in {spec.repo_cache()}",
            hint="pass --download to fetch it (needs network), or point --model at a local folder")
    raise UsageError(f"{via}: no such file or folder {excerpt(value)}, no checkpoint of that name in the models "
                     "folders, and it is not a hub repo id (org/name)", hint="`codex models` lists the checkpoints it finds")


def _named_checkpoint(value: str, via: str) -> "model_files.ModelFile | None":
    """A checkpoint of the models folders called ``value`` (a name as `codex models` shows it)."""
    return model_files.lookup("checkpoints", value, via)


def weight_file(path: Path, via: str, allow_pickle: bool) -> Path:
    """A single weight file the user named: safetensors/GGUF, or a pickle format only with --allow-pickle."""
    suffix = path.suffix.lower()
    if suffix in model_files.PICKLE_SUFFIXES and not allow_pickle:
        raise UsageError(f"{via}: {str(path)!r} is a pickle-based file ({suffix}); loading one can run code",
                         hint="prefer a .safetensors copy; pass --allow-pickle only for files you trust "
                              "(they are then read with torch.load(weights_only=True))")
    if suffix not in model_files.WEIGHT_SUFFIXES:
        raise UsageError(f"{via}: {str(path)!r} is not a weight file; allowed: "
                         f"{', '.join(model_files.SAFE_SUFFIXES)} (and {', '.join(model_files.PICKLE_SUFFIXES)} "
                         "with --allow-pickle), or a model folder")
    regular_status(path, via)  # a FIFO or a device is refused, never opened
    if suffix == ".safetensors":
        model_files.read_safetensors_header(path, via)  # a corrupt header is a usage error, now
    return path.resolve()


def component_files(spec: "Engine", values: tuple[str, ...] | list[str], allow_pickle: bool
                    ) -> tuple[tuple[str, Path], ...]:
    """``--component NAME=FILE`` values: FILE a path, or a name in the diffusion_models (then checkpoints) folders."""
    found: dict[str, Path] = {}
    for value in values:
        name, sep, target = value.partition("=")
        via = f"--component {value}"
        if not sep or not name or not target:
            raise UsageError(f"--component: expected NAME=FILE (e.g. transformer=model-Q8_0.gguf), got {value!r}")
        if name not in spec.replaceable_components:
            allowed = ", ".join(spec.replaceable_components) or "none"
            raise UsageError(f"--component: engine {spec.key} has no replaceable component {name!r}; "
                             f"allowed: {allowed}")
        if name in found:
            raise UsageError(f"--component: {name} given twice")
        path = user_path(target, via)
        if not path.exists():
            named = model_files.lookup("diffusion_models", target, via) or model_files.lookup("checkpoints", target, via)
            path = named.path if named else model_files.find("diffusion_models", target, via).path
        if path.is_dir():
            raise UsageError(f"{via}: {target!r} is a folder; a component is one weight file")
        found[name] = weight_file(path, via, allow_pickle)
    return tuple(sorted(found.items()))


def resolve(spec: "Engine", model: str | None, *, task: str | None = None, download: bool = False,
            allow_pickle: bool = False) -> ModelSource:
    """``--model``, then ``CODEX_MODEL_<ENGINE>``, then ``<models dir>/<engine>/``, then the default repo id.

    A task with its own checkpoint (``spec.task_default_repos``) looks under ``<engine>_<task>``.
    """
    marker, tiny_version = spec.model_marker, spec.tiny_version
    if model:
        return _explicit(spec, model, "--model", download, allow_pickle, marker, tiny_version)
    slot = _slot(spec, task)
    env = _env_name(slot)
    if os.environ.get(env):
        return _explicit(spec, os.environ[env], env, download, allow_pickle, marker, tiny_version)
    looked = ["--model (not given)", f"${env} (not set)"]
    local = models_dir() / slot
    if _is_model_folder(local, marker):
        return ModelSource("folder", local.resolve(), str(local), found_via="models dir")
    looked.append(f"{local.resolve()} (no {marker})" if local.exists() else f"{local.resolve()} (missing)")
    repo = spec.task_default_repos.get(task) or spec.default_repo
    if repo:
        snapshot = spec.find_repo(repo, download, allow_pickle)
        if snapshot is not None:
            return ModelSource("hub", snapshot, repo, repo_id=repo, found_via="default repo")
        looked.append(f"{repo} in {spec.repo_cache()} (not there)")
    places = "\n".join(f"    {p}" for p in looked)
    fixes = ["--model PATH (a model folder) or --model ORG/NAME", f"{env}=PATH",
             f"a model folder at {local} (CODEX_MODELS_DIR sets the models dir)"]
    if repo:
        fixes.append(f"--download to fetch {repo} (needs network)")
    if tiny_version:
        fixes.append("--model tiny for a random-weight test model")
    what = f"{spec.key} {task}" if task in spec.task_default_repos else spec.key
    raise ModelNotFoundError(f"no model found for {what}; looked in:\n{places}", hint="; ".join(fixes))


def variant_of(spec: "Engine", source: ModelSource) -> str | None:
    """Which checkpoint variant a source holds (for variant-specific presets), read from its configs."""
    if not spec.variants:
        return None
    if source.kind == "tiny":
        return spec.tiny_variant or spec.variants[0]
    variant = spec.detect_variant(source.path)
    if variant not in spec.variants:
        raise UsageError(f"{source.label}: cannot tell which {spec.key} variant this checkpoint is "
                         f"(known: {', '.join(spec.variants)})")
    return variant
