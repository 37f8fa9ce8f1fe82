"""Where model weights come from. Nothing here reaches the network unless ``download`` is asked for."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelNotFoundError, UsageError

if TYPE_CHECKING:
    from .engine import Engine

TINY = "tiny"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# Pickle-based weight formats are fetched/loaded only with --allow-pickle.
PICKLE_PATTERNS = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl"]


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "folder", "tiny" or "hub"
    path: Path
    label: str  # what the user asked for, as they would say it again
    repo_id: str | None = None
    found_via: str = "--model"

    def info(self) -> dict:
        return {"kind": self.kind, "label": self.label, "path": str(self.path), "repo_id": self.repo_id,
                "found_via": self.found_via}


def cache_dir() -> Path:
    base = os.environ.get("CODEX_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codex"


def models_dir() -> Path:
    return Path(os.environ.get("CODEX_MODELS_DIR", "models"))


def tiny_path(spec: "Engine", version: str) -> Path:
    return cache_dir() / "tiny" / f"{spec.key}-{version}"


def _slot(spec: "Engine", task: str | None) -> str:
    """The name models are looked up under: the engine key, or ``<engine>_<task>`` for a task with its own checkpoint."""
    return f"{spec.key}_{task}" if task in spec.task_default_repos else spec.key


def _env_name(slot: str) -> str:
    return "CODEX_MODEL_" + re.sub(r"\W", "_", slot).upper()


def _is_model_folder(path: Path, marker: str | None) -> bool:
    return path.is_dir() and (marker is None or (path / marker).is_file())


def _from_hub_cache(repo_id: str, download: bool, allow_pickle: bool) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # The cache folder is read from the environment now, not when huggingface_hub was imported.
    cache = _hf_cache_dir()
    try:
        if download:
            return Path(snapshot_download(repo_id, cache_dir=cache,
                                          ignore_patterns=None if allow_pickle else PICKLE_PATTERNS))
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _explicit(spec: "Engine", value: str, via: str, download: bool, allow_pickle: bool, marker: str | None,
              tiny_version: str | None) -> ModelSource:
    if value == TINY:
        if tiny_version is None:
            raise UsageError(f"{via}: engine {spec.key!r} has no tiny test model")
        return ModelSource("tiny", tiny_path(spec, tiny_version), TINY, found_via=via)
    path = Path(value).expanduser()
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        raise UsageError(
            f"{via}: {value!r} is a single-file checkpoint; codex loads diffusers-format folders",
            hint="convert it once with diffusers (`Pipeline.from_single_file(...).save_pretrained(DIR)`) "
                 "and pass the folder")
    if path.exists():
        if _is_model_folder(path, marker):
            return ModelSource("folder", path.resolve(), value, found_via=via)
        raise UsageError(f"{via}: {value!r} is not a diffusers-format model folder (no {marker} inside)")
    if REPO_ID.match(value):
        snapshot = _from_hub_cache(value, download, allow_pickle)
        if snapshot is not None:
            return ModelSource("hub", snapshot, value, repo_id=value, found_via=via)
        raise ModelNotFoundError(
            f"{via}: {value!r} is not in the local Hugging Face cache ({_hf_cache_dir()})",
            hint="pass --download to fetch it (needs network), or point --model at a local folder")
    raise UsageError(f"{via}: no such folder {value!r}, and it is not a hub repo id (org/name)")


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.expanduser(os.path.join(home, "hub"))


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
        snapshot = _from_hub_cache(repo, download, allow_pickle)
        if snapshot is not None:
            return ModelSource("hub", snapshot, repo, repo_id=repo, found_via="default repo")
        looked.append(f"{repo} in the Hugging Face cache {_hf_cache_dir()} (not there)")
    places = "\n".join(f"    {p}" for p in looked)
    fixes = ["--model PATH (a diffusers folder) or --model ORG/NAME", f"{env}=PATH",
             f"a diffusers folder at {local} (CODEX_MODELS_DIR sets the models dir)"]
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
