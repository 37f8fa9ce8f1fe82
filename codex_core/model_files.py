"""Model files people already have: the models folders, their kinds, names, headers and hashes.

A models root has one folder per kind, in the layout of the tool that made it:

- ``codex`` (``$CODEX_MODELS_DIR``, default ``./models``): ``checkpoints``, ``diffusion_models``,
  ``loras``, ``vae``, ``embeddings`` (ComfyUI's names, without its ``models/`` level);
- ``comfyui``: the same under ``models/`` (plus ``models/unet``, its older name for diffusion models);
- ``a1111`` / ``forge``: ``models/Stable-diffusion``, ``models/Lora`` and ``models/LyCORIS``,
  ``models/VAE``, ``embeddings``.

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
a JSON object, read without loading a tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import UsageError

KINDS = ("checkpoints", "diffusion_models", "loras", "vae", "embeddings")
LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "codex": {"checkpoints": ("checkpoints",), "diffusion_models": ("diffusion_models",), "loras": ("loras",),
              "vae": ("vae",), "embeddings": ("embeddings",)},
    "comfyui": {"checkpoints": ("models/checkpoints",), "diffusion_models": ("models/diffusion_models", "models/unet"),
                "loras": ("models/loras",), "vae": ("models/vae",), "embeddings": ("models/embeddings",)},
    # A1111/Forge keep every whole or transformer-only checkpoint in one folder: listed as checkpoints
    # (``--component`` looks there too).
    "a1111": {"checkpoints": ("models/Stable-diffusion",), "diffusion_models": (),
              "loras": ("models/Lora", "models/LyCORIS"), "vae": ("models/VAE",), "embeddings": ("embeddings",)},
}
LAYOUTS["forge"] = LAYOUTS["a1111"]
SAFE_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
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


@dataclass(frozen=True)
class ModelFile:
    kind: str
    path: Path
    name: str  # path under its kind folder, without the weight suffix
    format: str  # "safetensors", "gguf", "pickle", or a model folder's format (its engines': e.g. "diffusers")
    bytes: int

    @property
    def stem(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def folder_formats() -> tuple[tuple[str, str], ...]:
    """(marker file, format) pairs: a folder holding a marker file is one model (a whole model or a component),
    in that format. The installed engines declare them (``Engine.folder_markers``, ``Engine.folder_format``)."""
    from .plugins import contribution
    from .registry import engines

    def collect() -> tuple[tuple[str, str], ...]:
        pairs: dict[str, str] = {}
        for engine in engines().values():
            for marker in engine.folder_markers:
                pairs.setdefault(marker, engine.folder_format)
        return tuple(pairs.items())

    return contribution("folder_formats", collect)


def _format(path: Path) -> str | None:
    if path.is_dir():
        return next((fmt for marker, fmt in folder_formats() if (path / marker).is_file()), None)
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        return suffix[1:]
    return "pickle" if suffix in PICKLE_SUFFIXES else None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def scan(kinds: Iterable[str] = KINDS) -> list[ModelFile]:
    """Every weight file (and model folder) under the roots' kind folders, in search order."""
    found: list[ModelFile] = []
    seen: set[tuple[str, Path]] = set()
    for kind in kinds:
        for folder in folders(kind):
            if not folder.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
                dirnames.sort()
                here = Path(dirpath)
                for sub in list(dirnames):  # a model folder is one model, not a tree to list
                    model_folder = not sub.startswith(".") and _format(here / sub) is not None
                    if sub.startswith(".") or model_folder:
                        dirnames.remove(sub)
                    if model_folder:
                        _add(found, seen, kind, folder, here / sub)
                for filename in sorted(filenames):
                    if not filename.startswith("."):
                        _add(found, seen, kind, folder, here / filename)
    return found


def _add(found: list[ModelFile], seen: set[tuple[str, Path]], kind: str, folder: Path, path: Path) -> None:
    fmt = _format(path)
    if fmt is None or (kind, path.resolve()) in seen:
        return
    seen.add((kind, path.resolve()))
    relative = path.relative_to(folder).as_posix()
    name = relative if path.is_dir() else relative[: -len(path.suffix)]
    size = _folder_bytes(path) if path.is_dir() else path.stat().st_size
    found.append(ModelFile(kind, path, name, fmt, size))


def lookup(kind: str, name: str, field: str) -> ModelFile | None:
    """The model file of ``kind`` called ``name`` (its name, or its bare stem when unique), or None.

    UsageError when the name is ambiguous: several files, in different folders, share the stem."""
    files = scan([kind])
    exact = [f for f in files if f.name == name or f.path.name == name]
    matches = exact or [f for f in files if f.stem == name]
    if len({f.path.resolve() for f in matches}) > 1:
        raise UsageError(f"{field}: {name!r} matches several {kind} files: "
                         + ", ".join(str(f.path) for f in matches), hint="give the name with its folder, or a path")
    return matches[0] if matches else None


def find(kind: str, name: str, field: str) -> ModelFile:
    """``lookup``, with a UsageError naming the folders searched when nothing matches."""
    found = lookup(kind, name, field)
    if found is not None:
        return found
    files = scan([kind])
    looked = [str(folder) for folder in folders(kind)]
    close = sorted(f.name for f in files)[:8]
    raise UsageError(f"{field}: no {kind} file named {name!r} in {', '.join(looked) or 'no folder'}",
                     hint=(f"known {kind}: {', '.join(close)}" if close else f"put it in {looked[0]}" if looked
                           else "see `codex models`") + "; or give a path")


def find_by_sha256(kind: str, sha256: str) -> ModelFile | None:
    """The first ``kind`` file in the roots whose content has this sha256 (hashes computed once, cached)."""
    for candidate in scan([kind]):
        if candidate.path.is_file() and file_sha256(candidate.path) == sha256:
            return candidate
    return None


# -- headers ---------------------------------------------------------------------------------------


def read_safetensors_header(path: Path, field: str = "--model") -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, offsets; ``__metadata__``).

    UsageError naming ``field`` for anything that is not a well-formed header: no tensor is loaded.
    """
    stat = Path(path).stat()
    return dict(_header(str(path), stat.st_size, stat.st_mtime_ns, field))


@lru_cache(maxsize=256)
def _header(path: str, size: int, mtime_ns: int, field: str) -> dict[str, Any]:
    def bad(why: str) -> UsageError:
        return UsageError(f"{field}: {path!r} is not a valid safetensors file ({why})",
                          hint="the file may be truncated or not a model; download it again")

    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or length > size - 8:
            raise bad(f"header length {length} exceeds {'the file' if length > size - 8 else 'the 100 MB limit'}")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise bad(f"entry {name!r} lacks dtype/shape/data_offsets")
        end = max(end, entry["data_offsets"][1])
    if 8 + length + end > size:
        raise bad(f"tensors end at byte {8 + length + end}, the file has {size}")
    return header


def tensor_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


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
    with open(path, "rb") as handle:
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
        return {"path": str(path), "bytes": _folder_bytes(path)}
    sha = file_sha256(path, progress)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha, "hash": short_hash(sha)}


def describe(kinds: Iterable[str] = KINDS, engine_key: str | None = None, hashes: bool = True,
             progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """What `codex models` lists: each file's kind, name, format, size, short hash and the engines that use it.

    Each installed engine is asked (``Engine.file_problem``) from the file's header; pickle files are
    never opened to find out (that could run code), so their engines are unknown.
    """
    from .registry import engines

    installed = [e for e in engines().values() if engine_key in (None, e.key)]
    rows = []
    for found in scan(kinds):
        row: dict[str, Any] = {"kind": found.kind, "name": found.name, "format": found.format,
                               "bytes": found.bytes, "path": str(found.path), "hash": None, "engines": [],
                               "family": None, "problem": None}
        if found.format == "pickle":
            row["problem"] = "pickle file: not opened (pass it with --allow-pickle to use it)"
        else:
            try:
                fits = [e for e in installed if e.file_problem(found.kind, found.path) is None]
            except UsageError as exc:  # e.g. a corrupt header: listed, with the reason
                fits, row["problem"] = [], exc.message
            row["engines"] = [e.key for e in fits]
            row["family"] = ", ".join(dict.fromkeys(e.family for e in fits if e.family)) or None
        if hashes and found.path.is_file():
            row["hash"] = short_hash(file_sha256(found.path, progress))
        if engine_key is None or row["engines"]:
            rows.append(row)
    return rows
