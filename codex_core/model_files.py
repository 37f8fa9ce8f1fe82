"""Model files people already have: the models folders, their kinds, names, headers and hashes.

A models root has one folder per kind, in the layout of the tool that made it:

- ``codex`` (``$CODEX_MODELS_DIR``, default ``./models``): ``checkpoints``, ``diffusion_models``,
  ``loras``, ``vae``, ``embeddings``, ``controlnet``, ``clip_vision`` (ComfyUI's names, without its ``models/``
  level), ``ipadapter`` (IP-Adapter files, ComfyUI_IPAdapter_plus's folder) and ``annotators`` (the weights of
  control-image preprocessors);
- ``comfyui``: the same under ``models/`` (plus ``models/unet``, its older name for diffusion models);
  annotators where comfyui_controlnet_aux downloads them, ``custom_nodes/comfyui_controlnet_aux/ckpts``;
- ``a1111`` / ``forge``: ``models/Stable-diffusion``, ``models/Lora`` and ``models/LyCORIS``,
  ``models/VAE``, ``embeddings``, ``models/ControlNet`` (where sd-webui-controlnet keeps IP-Adapter files too:
  a request's IP-Adapter name is looked for there after the ``ipadapter`` folders); annotators and the IP-Adapter image encoders where
  sd-webui-controlnet keeps them (``extensions/sd-webui-controlnet/annotator/downloads`` and ``.../clip_vision``),
  Forge's in ``models/ControlNetPreprocessor`` (its ``clip_vision`` folder inside it is listed as both kinds).

More roots, in place, come from the config file (``$CODEX_CONFIG``, else
``$XDG_CONFIG_HOME/codex/config.yaml``, i.e. ``~/.config/codex/config.yaml``)::

    models:
      roots:
        - {path: ~/stable-diffusion-webui, layout: a1111}
        - {path: ~/ComfyUI, layout: comfyui}
      loras: [/data/more-loras]        # extra folders of one kind

Names are what A1111 shows: the file's path under its kind folder, without the suffix
(``styles/my-model``), or its bare stem when that is unique. Hashes are A1111's: the file's
sha256, of which the "Model hash" is the first 10 hex digits; each is computed once and cached by
(path, size, mtime). Everything here is torch-free: a safetensors header is 8 bytes of length and
a JSON object, read without loading a tensor (``safetensors_header`` checks every part of it).

The walk (``model_scan``) enters each real folder once (links loop safely), lists only regular files
(a FIFO or a link to a device is skipped, never opened) and stops when its time budget
(``$CODEX_SCAN_SECONDS``, default 10) runs out; what it skipped is listed with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import UsageError
from .model_scan import (PICKLE_SUFFIXES, SAFE_SUFFIXES, WEIGHT_SUFFIXES, ModelFile, Skipped, Survey,  # noqa: F401
                         folder_bytes, folder_formats, survey)
from .paths import excerpt
from .safetensors_header import MAX_HEADER, open_regular, read_safetensors_header, tensor_shapes  # noqa: F401

KINDS = ("checkpoints", "diffusion_models", "loras", "vae", "embeddings", "controlnet", "annotators", "clip_vision",
         "ipadapter")
A1111_CONTROLNET_EXTENSION = "extensions/sd-webui-controlnet/annotator"
LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "codex": {"checkpoints": ("checkpoints",), "diffusion_models": ("diffusion_models",), "loras": ("loras",),
              "vae": ("vae",), "embeddings": ("embeddings",), "controlnet": ("controlnet",),
              "annotators": ("annotators",), "clip_vision": ("clip_vision",), "ipadapter": ("ipadapter",)},
    "comfyui": {"checkpoints": ("models/checkpoints",), "diffusion_models": ("models/diffusion_models", "models/unet"),
                "loras": ("models/loras",), "vae": ("models/vae",), "embeddings": ("models/embeddings",),
                "controlnet": ("models/controlnet",), "annotators": ("custom_nodes/comfyui_controlnet_aux/ckpts",),
                "clip_vision": ("models/clip_vision",), "ipadapter": ("models/ipadapter",)},
    # A1111/Forge keep every whole or transformer-only checkpoint in one folder: listed as checkpoints
    # (``--component`` looks there too).
    "a1111": {"checkpoints": ("models/Stable-diffusion",), "diffusion_models": (),
              "loras": ("models/Lora", "models/LyCORIS"), "vae": ("models/VAE",), "embeddings": ("embeddings",),
              "controlnet": ("models/ControlNet",), "annotators": (f"{A1111_CONTROLNET_EXTENSION}/downloads",),
              "clip_vision": (f"{A1111_CONTROLNET_EXTENSION}/clip_vision",)},
}
# Forge: A1111's folders, its preprocessors' weights (and their image encoders) in models/ControlNetPreprocessor
LAYOUTS["forge"] = {**LAYOUTS["a1111"], "annotators": ("models/ControlNetPreprocessor",),
                    "clip_vision": ("models/ControlNetPreprocessor/clip_vision",)}
SHORT_HASH = 10  # A1111's "Model hash": the first 10 hex digits of the sha256


def config_path() -> Path:
    if os.environ.get("CODEX_CONFIG"):
        return Path(os.environ["CODEX_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "codex" / "config.yaml"


def models_dir() -> Path:
    return Path(os.environ.get("CODEX_MODELS_DIR", "models"))


@dataclass(frozen=True)
class Root:
    path: Path
    layout: str  # a LAYOUTS name, or "kind:<kind>" for a folder of one kind
    origin: str  # where it was configured

    def folders(self, kind: str) -> list[Path]:
        if self.layout.startswith("kind:"):
            return [self.path] if self.layout == f"kind:{kind}" else []
        return [self.path / sub for sub in LAYOUTS[self.layout].get(kind, ())]


def _config() -> tuple[Path, dict[str, Any]]:
    import yaml

    path = config_path()
    if not path.is_file():
        if os.environ.get("CODEX_CONFIG"):
            raise UsageError(f"CODEX_CONFIG: no such file {str(path)!r}")
        return path, {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: must be a mapping (e.g. `models: {{roots: [...]}}`), got {type(data).__name__}")
    return path, data


def roots() -> list[Root]:
    """The models roots in search order: ``$CODEX_MODELS_DIR`` first, then the config file's."""
    found = [Root(models_dir(), "codex", "CODEX_MODELS_DIR" if os.environ.get("CODEX_MODELS_DIR") else "default")]
    path, data = _config()
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise UsageError(f"{path}: models must be a mapping (roots: [...], loras: [...], ...), got {models!r}")
    unknown = sorted(set(data) - {"models"}) + sorted(f"models.{k}" for k in set(models) - {"roots", *KINDS})
    if unknown:
        raise UsageError(f"{path}: unknown setting {', '.join(unknown)}; allowed: models.roots, "
                         + ", ".join(f"models.{kind}" for kind in KINDS))
    for index, entry in enumerate(models.get("roots") or []):
        where = f"{path}: models.roots[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"path", "layout"} or "path" not in entry:
            raise UsageError(f"{where}: expected {{path: DIR, layout: {'|'.join(LAYOUTS)}}}, got {entry!r}")
        layout = entry.get("layout", "codex")
        if layout not in LAYOUTS:
            raise UsageError(f"{where}.layout: {layout!r} is not a known layout; allowed: {', '.join(LAYOUTS)}")
        found.append(Root(Path(str(entry["path"])).expanduser(), layout, where))
    for kind in KINDS:
        folders = models.get(kind) or []
        if not isinstance(folders, list):
            raise UsageError(f"{path}: models.{kind} must be a list of folders, got {folders!r}")
        found += [Root(Path(str(folder)).expanduser(), f"kind:{kind}", f"{path}: models.{kind}") for folder in folders]
    return found


def folders(kind: str) -> list[Path]:
    return [folder for root in roots() for folder in root.folders(kind)]


def scan_folders(kinds: Iterable[str] = KINDS, seconds: float | None = None) -> Survey:
    """Every weight file (and model folder) under the roots' kind folders, in search order, and what was skipped
    (``model_scan``: each real folder once, regular files only, within ``seconds``, default $CODEX_SCAN_SECONDS)."""
    kinds = list(kinds)
    return survey(((kind, folders(kind)) for kind in kinds), seconds)


def scan(kinds: Iterable[str] = KINDS) -> list[ModelFile]:
    """Every weight file (and model folder) under the roots' kind folders, in search order."""
    return scan_folders(kinds).files


def lookup(kind: str, name: str, field: str) -> ModelFile | None:
    """The model file of ``kind`` called ``name`` (its name, or its bare stem when unique), or None.

    UsageError when the name is ambiguous (several files, in different folders, share the stem) or names a
    file the scan skipped (a FIFO, a device, a broken link: said why)."""
    return _lookup(scan_folders([kind]), kind, name, field)


def _lookup(found: Survey, kind: str, name: str, field: str) -> ModelFile | None:
    exact = [f for f in found.files if f.name == name or f.path.name == name]
    matches = exact or [f for f in found.files if f.stem == name]
    if len({f.path.resolve() for f in matches}) > 1:
        raise UsageError(f"{field}: {name!r} matches several {kind} files: "
                         + ", ".join(str(f.path) for f in matches), hint="give the name with its folder, or a path")
    if matches:
        return matches[0]
    unusable = [s for s in found.skipped if s.name is not None
                and name in (s.name, s.path.name, s.name.rsplit("/", 1)[-1])]
    if unusable:
        raise UsageError(f"{field}: {name!r} is {unusable[0].path}, which is not used ({unusable[0].reason})",
                         hint="put the weight file itself there")
    return None


def find(kind: str, name: str, field: str) -> ModelFile:
    """``lookup``, with a UsageError naming the folders searched when nothing matches."""
    found = scan_folders([kind])
    match = _lookup(found, kind, name, field)
    if match is not None:
        return match
    looked = [str(folder) for folder in folders(kind)]
    close = sorted(f.name for f in found.files)[:8]
    hint = (f"known {kind}: {', '.join(close)}" if close else f"put it in {looked[0]}" if looked
            else "see `codex models`") + "; or give a path"
    if found.timed_out:
        hint = f"the scan stopped after {found.seconds:g} s before it saw every folder ($CODEX_SCAN_SECONDS raises " \
               f"it); {hint}"
    raise UsageError(f"{field}: no {kind} file named {excerpt(name)} in {', '.join(looked) or 'no folder'}", hint=hint)


def find_by_sha256(kind: str, sha256: str) -> ModelFile | None:
    """The first ``kind`` file in the roots whose content has this sha256 (hashes computed once, cached); a model
    folder (e.g. a diffusers ControlNet) counts by its single weights file, the file a run records."""
    for candidate in scan([kind]):
        weights = candidate.path if candidate.path.is_file() else single_weights_file(candidate.path)
        if weights is not None and file_sha256(weights) == sha256:
            return candidate
    return None


def single_weights_file(folder: Path) -> Path | None:
    """The one weight file at the top of a model folder (a diffusers model: config.json beside it), or None."""
    weights = [path for path in sorted(folder.glob("*")) if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES]
    return weights[0] if len(weights) == 1 else None


# -- hashes ----------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Codex's cache folder ($CODEX_CACHE_DIR, else ~/.cache/codex): tiny models, file hashes."""
    base = os.environ.get("CODEX_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codex"


def _hash_cache_path() -> Path:
    return cache_dir() / "file-hashes.json"


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, for this process


def file_sha256(path: Path, progress: Callable[[str], None] | None = None) -> str:
    """The sha256 of a file's content, cached by (absolute path, size, mtime) in the codex cache folder."""
    path = Path(path).resolve()
    stat = path.stat()
    known = (str(path), stat.st_size, stat.st_mtime_ns)
    if known in _HASHES:  # this process read or computed it already: no need to re-read the cache file
        return _HASHES[known]
    cache_file = _hash_cache_path()
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(str(path))
    if isinstance(entry, dict) and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        _HASHES[known] = entry["sha256"]
        return entry["sha256"]
    if progress and stat.st_size > 64 * 1024 * 1024:
        progress(f"hashing {path.name} ({stat.st_size / 2**30:.1f} GiB, once; the result is cached)")
    digest = hashlib.sha256()
    with open_regular(path, "hash") as handle:  # a FIFO or a device is never read: it could block or never end
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    sha = _HASHES[known] = digest.hexdigest()
    try:  # re-read and merge: another process may have added entries meanwhile
        cached = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    cached[str(path)] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a read-only cache costs a re-hash next time, nothing else
    return sha


def short_hash(sha256: str) -> str:
    return sha256[:SHORT_HASH]


def file_record(path: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What info.json records of a model file: path, size, sha256 and A1111's short hash."""
    path = Path(path).resolve()
    if path.is_dir():
        return {"path": str(path), "bytes": folder_bytes(path)}
    sha = file_sha256(path, progress)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha, "hash": short_hash(sha)}


def describe(kinds: Iterable[str] = KINDS, engine_key: str | None = None, hashes: bool = True,
             progress: Callable[[str], None] | None = None, found: Survey | None = None) -> list[dict[str, Any]]:
    """What `codex models` lists: each file's kind, name, format, size, short hash and the engines that use it.

    Each installed engine is asked (``Engine.file_problem``) from the file's header; pickle files are
    never opened to find out (that could run code), so their engines are unknown. A file that cannot be
    read, and what the scan skipped (``found.skipped``: not a regular file, a folder it had no time or
    permission to scan), are rows with a ``problem``; like every such row, listed only without an engine.
    """
    from .registry import engines

    installed = [e for e in engines().values() if engine_key in (None, e.key)]
    found = scan_folders(kinds) if found is None else found
    rows = [_row(model, installed, hashes, progress) for model in found.files]
    rows += [{"kind": skip.kind, "name": skip.name, "format": skip.format, "bytes": None, "path": str(skip.path),
              "hash": None, "engines": [], "family": None, "problem": skip.reason} for skip in found.skipped]
    return [row for row in rows if engine_key is None or row["engines"]]


def _row(found: ModelFile, installed: list, hashes: bool, progress: Callable[[str], None] | None) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": found.kind, "name": found.name, "format": found.format, "bytes": found.bytes,
                           "path": str(found.path), "hash": None, "engines": [], "family": None, "problem": None}
    if found.format == "pickle" and found.kind != "annotators":  # annotator weights are .pth files by nature
        row["problem"] = "pickle file: not opened (pass it with --allow-pickle to use it)"
    else:
        try:
            fits = [e for e in installed if e.file_problem(found.kind, found.path) is None]
        except UsageError as exc:  # e.g. a corrupt header: listed, with the reason
            fits, row["problem"] = [], exc.message
        except Exception as exc:  # whatever else a file makes a reader raise: one file never breaks the list
            fits, row["problem"] = [], f"cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
        row["engines"] = [e.key for e in fits]
        row["family"] = ", ".join(dict.fromkeys(e.family for e in fits if e.family)) or None
    if hashes and found.path.is_file():
        try:
            row["hash"] = short_hash(file_sha256(found.path, progress))
        except (OSError, UsageError) as exc:
            row["problem"] = row["problem"] or f"cannot be read: {getattr(exc, 'strerror', None) or exc}"
    return row
