"""Running a recorded request again (``codex replay``) and comparing the new output with the old.

A run records everything that decides its pixels: the effective request (seed included), the
engine and task, the model (its label and a fingerprint), the run options (device, dtype, ...: each
records itself, ``codex_core.run_options``), the preset profile and the output formats. Replay feeds
exactly that back through ``prepare``/``execute``. ``compare`` checks the pixels, and a video's sound track
by the hash of its PCM before encoding (``info.audio.sha256``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import UsageError
from .inspect_outputs import read_info

VIDEO_CONTAINERS = ("mp4", "webm")


@dataclass
class Recorded:
    """What a replay starts from: the run's info and where its outputs are."""

    info: dict[str, Any]
    path: Path  # what the user pointed at
    run_dir: Path | None  # the run folder, when the info came from (or sits beside) its info.json
    file: Path | None = None  # a single PNG or video given on its own (no run folder around it)
    batch_index: int = 0


def load(path: Path) -> Recorded:
    """The recorded run behind a PNG, a video, an ``info.json`` or a run folder."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".json":
        folder = path if path.is_dir() else path.parent
        return Recorded(_complete(read_info(path), path), path, folder)
    data = read_info(path)
    embedded = data.get("codex")
    if not embedded:
        raise UsageError(f"{path}: no codex metadata to replay (only A1111 parameters)")
    beside = path.parent / "info.json"
    if beside.is_file():  # the run folder's info.json is complete; the PNG/video carries a subset
        try:
            full = json.loads(beside.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            full = None
        if full and full.get("run_id") == embedded.get("run_id"):
            return Recorded(_complete(full, path), path, path.parent, batch_index=embedded.get("batch_index", 0))
    return Recorded(_complete(embedded, path), path, None, file=path, batch_index=embedded.get("batch_index", 0))


def _complete(info: dict[str, Any], path: Path) -> dict[str, Any]:
    missing = [key for key in ("engine", "task", "request", "model") if not info.get(key)]
    if missing:
        raise UsageError(f"{path}: the recorded run lacks {', '.join(missing)}; cannot replay it")
    return info


def model_argument(info: dict[str, Any]) -> str:
    """``--model`` as the original run resolved it: tiny, a folder's path or a hub repo id."""
    model = info["model"]
    if model.get("kind") == "tiny":
        return "tiny"
    if model.get("kind") == "hub" and model.get("repo_id"):
        return model["repo_id"]
    return model.get("path") or model["label"]


def request_with_inputs(info: dict[str, Any]) -> dict[str, Any]:
    """The recorded request with each input file where the original run found it.

    ``info.inputs`` holds each input's absolute path as the run resolved it (a relative path against
    its working directory, ``info.cwd``), so a replay from another folder reads the same files. Runs
    recorded before ``info.inputs`` existed keep their paths as written.
    """
    request = json.loads(json.dumps(info["request"]))
    for field, record in (info.get("inputs") or {}).items():
        *parents, name = field.split(".")
        target = request
        for parent in parents:
            if isinstance(target, list) and parent.isdigit() and int(parent) < len(target):
                target = target[int(parent)]
            else:
                target = target.get(parent) if isinstance(target, dict) else None
        if isinstance(target, dict) and name in target and record.get("path"):
            target[name] = record["path"]
        elif isinstance(target, list) and name.isdigit() and int(name) < len(target) and record.get("path"):
            target[int(name)] = record["path"]  # an item of a list of files ("images.1")
    return request


def changed_inputs(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded input files whose content is not what the run read: missing, or another sha256."""
    import hashlib

    changed = []
    for field, record in (info.get("inputs") or {}).items():
        path = Path(record.get("path", ""))
        if not path.is_file():
            changed.append({"field": field, "path": str(path), "reason": "gone"})
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != record.get("sha256"):
            changed.append({"field": field, "path": str(path), "reason": "changed",
                            "sha256_recorded": record.get("sha256"), "sha256_now": digest})
    return changed


def runtime_of(info: dict[str, Any], overrides: dict[str, Any] | None = None):
    """The runtime a recorded run asked for: each run option as the run recorded it (``RunOption.replayed``),
    or as given now in ``overrides`` (None: not given); an option replay does not carry (--allow-pickle)
    is the override or its default."""
    from . import run_options
    from .runtime import Runtime

    return Runtime.of(run_options.replayed(info, overrides or {}))  # checked by prepare, as any run


def formats_of(info: dict[str, Any]) -> tuple[str, ...] | None:
    """The output formats of the original run (None: the default for its kind)."""
    if info.get("formats"):
        return tuple(info["formats"])
    found = [entry["format"] for entry in info.get("videos") or [] if entry.get("format")]
    if info.get("frames"):
        found.insert(0, "frames")
    return tuple(found) or None


# -- comparing outputs ------------------------------------------------------------------------------


# Frames are compared as PIL images (no numpy): ImageChops gives the per-channel difference.


def _png(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _decoded(path: Path) -> Iterator[Any]:
    from .exporters.video import decode_frames

    return decode_frames(path)


def _max_difference(a, b) -> int:
    from PIL import ImageChops

    return max(high for _, high in ImageChops.difference(a, b).getextrema())


def _numbered_pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if p.stem.isdigit())


def _pairs(old: Recorded, new_dir: Path, kind: str) -> tuple[str, list[tuple[Any, Any]] | None, str | None]:
    """(what is compared, pairs of frames/images or None, why nothing could be compared)."""
    if kind == "image":
        if old.run_dir is not None:
            mine = _numbered_pngs(old.run_dir)
            return "images", [(a, b) for a, b in _zip_all(mine, _numbered_pngs(new_dir))], None
        return "images", [(old.file, new_dir / f"{old.batch_index:04d}.png")], None
    if old.run_dir is not None and (old.run_dir / "frames").is_dir() and (new_dir / "frames").is_dir():
        return "frames", list(_zip_all(_numbered_pngs(old.run_dir / "frames"),
                                      _numbered_pngs(new_dir / "frames"))), None
    candidates = [old.file] if old.file is not None else [old.run_dir / f"video.{c}" for c in VIDEO_CONTAINERS]
    for original in candidates:
        if original is not None and original.is_file() and (new_dir / original.name).is_file():
            return f"{original.suffix[1:]} frames", [("video", original, new_dir / original.name)], None
    return "frames", None, "no frames/ PNGs or MP4/WebM video in both runs"


def _zip_all(a: list, b: list) -> Iterator[tuple[Any, Any]]:
    for index in range(max(len(a), len(b))):
        yield (a[index] if index < len(a) else None, b[index] if index < len(b) else None)


def _frame_pairs(pairs: list) -> Iterator[tuple[Any, Any]]:
    for pair in pairs:
        if pair[0] == "video":
            yield from _zip_all(list(_decoded(pair[1])), list(_decoded(pair[2])))
        else:
            a, b = pair
            yield (_png(a) if a is not None and Path(a).is_file() else None,
                   _png(b) if b is not None and Path(b).is_file() else None)


def compare(old: Recorded, new_dir: Path, kind: str) -> dict[str, Any]:
    """``{"identical", "max_pixel_difference", "compared", "differing", "what"}`` of old vs new output."""
    what, pairs, reason = _pairs(old, new_dir, kind)
    if pairs is None:
        return {"identical": False, "max_pixel_difference": None, "compared": 0, "differing": 0, "what": what,
                "reason": reason}
    compared = differing = worst = 0
    notes = []
    for index, (a, b) in enumerate(_frame_pairs(pairs)):
        compared += 1
        if a is None or b is None:
            differing += 1
            worst = 255
            notes.append(f"{what} {index}: only in the {'new' if a is None else 'original'} run")
            continue
        if a.size != b.size:
            differing += 1
            worst = 255
            notes.append(f"{what} {index}: size {a.size[0]}x{a.size[1]} became {b.size[0]}x{b.size[1]}")
            continue
        difference = _max_difference(a, b)
        if difference:
            differing += 1
            worst = max(worst, difference)
    result = {"identical": compared > 0 and differing == 0, "max_pixel_difference": worst, "compared": compared,
              "differing": differing, "what": what}
    if notes:
        result["notes"] = notes
    if not compared:
        result["reason"] = "the original run has no outputs to compare"
    sound = compare_audio(old.info, new_dir)
    if sound is not None:
        result["audio"] = sound
        result["identical"] = result["identical"] and sound["identical"]
    return result


def _exported_track(info: dict[str, Any]) -> str | None:
    """The sha256 of the sound track a run exported (None: it exported none, or dropped it for "audio": false)."""
    audio = info.get("audio") or {}
    return None if audio.get("dropped") else audio.get("sha256")


def compare_audio(old_info: dict[str, Any], new_dir: Path) -> dict[str, Any] | None:
    """The sound tracks of both runs, by the hash of their PCM before encoding (AAC and Opus are lossy: the
    files cannot be compared sample by sample); None when neither run exported sound."""
    try:
        new_info = json.loads((new_dir / "info.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        new_info = {}
    recorded, now = _exported_track(old_info), _exported_track(new_info)
    if recorded is None and now is None:
        return None
    if recorded == now:
        return {"identical": True, "sha256": now}
    return {"identical": False, "sha256_recorded": recorded, "sha256_now": now}


def _sound_words(check: dict[str, Any]) -> str:
    sound = check.get("audio")
    if sound is None:
        return ""
    if sound["identical"]:
        return "; sound track identical (sha256 of its PCM)"

    def name(sha: str | None) -> str:
        return sha[:12] if sha else "none"

    return f"; the sound track differs (sha256 {name(sound['sha256_recorded'])}, now {name(sound['sha256_now'])})"


def check_line(check: dict[str, Any]) -> str:
    if check.get("reason") and not check["compared"]:
        return f"codex: replay check: cannot compare: {check['reason']}"
    if check["identical"]:
        return (f"codex: replay check: identical ({check['compared']} {check['what']} compared, "
                f"max pixel difference 0{_sound_words(check)})")
    changed = check.get("changed_inputs") or []
    because = ("; the input " + ", ".join(f"{c['field']} ({c['path']}, {c['reason']})" for c in changed)
               + " is not what the original run read") if changed else ""
    return (f"codex: replay check: DIFFERENT: {check['differing']} of {check['compared']} {check['what']} differ, "
            f"max pixel difference {check['max_pixel_difference']}{_sound_words(check)}{because}")


# -- model files, found again by content ---------------------------------------------------------------


@dataclass
class ModelFiles:
    """The model files a replay uses: where the run found them, or where their content is now."""

    model: str | None
    config: str | None
    components: tuple[str, ...]
    request: dict[str, Any]
    moved: list[str]  # one line per file found elsewhere by its sha256
    missing: list[str]  # one line per file found nowhere (the replay then fails or differs)


def _same_content(path: Path, sha256: str | None) -> bool:
    from .model_files import file_sha256

    return path.is_file() and (sha256 is None or file_sha256(path) == sha256)


def _relocate(what: str, path: str | None, sha256: str | None, kinds: tuple[str, ...], found: ModelFiles) -> str | None:
    """``path`` if it still holds the recorded content, else the first file of ``kinds`` with that sha256."""
    from .model_files import find_by_sha256

    if path and _same_content(Path(path), sha256):
        return path
    for kind in kinds:
        match = find_by_sha256(kind, sha256) if sha256 else None
        if match is not None:
            found.moved.append(f"{what}: {path} {'has changed' if path and Path(path).exists() else 'is gone'}; "
                               f"the same content (sha256 {sha256[:10]}) is at {match.path}")
            return str(match.path)
    found.missing.append(f"{what}: {path} {'has changed' if path and Path(path).exists() else 'is gone'} and no "
                         f"file in the {'/'.join(kinds)} folders has its sha256")
    return path


def model_files_of(info: dict[str, Any], request: dict[str, Any]) -> ModelFiles:
    """The checkpoint file, component files, LoRAs and VAE of a recorded run, found again by their sha256 in
    the models folders when they moved (A1111's hashes make the same lookup across installs)."""
    model = info.get("model") or {}
    files = model.get("files") or {}
    found = ModelFiles(None, model.get("config"), (), json.loads(json.dumps(request)), [], [])
    if model.get("kind") == "file":
        found.model = _relocate("the checkpoint", model.get("path"), (files.get("checkpoint") or {}).get("sha256"),
                                ("checkpoints",), found)
    components = []
    for name, path in (model.get("components") or {}).items():
        sha = (files.get(f"component:{name}") or {}).get("sha256")
        components.append(f"{name}={_relocate(f'component {name}', path, sha, ('diffusion_models', 'checkpoints'), found)}")
    found.components = tuple(components)
    for index, entry in enumerate(found.request.get("loras") or []):
        if not isinstance(entry, dict):
            continue
        label = entry.get("name") or Path(str(entry.get("path"))).stem
        record = files.get(f"lora:{label}") or {}
        if not record.get("path"):
            continue
        where = _relocate(f"loras[{index}]", record["path"], record.get("sha256"), ("loras",), found)
        if where != record["path"] or entry.get("name") is None:
            entry.pop("name", None)
            entry["path"] = where
    # LoRAs of <lora:NAME> tags and embeddings are looked up by name again: say when the name now
    # means other content (or nothing), since the prompt cannot carry a path
    from .model_files import file_sha256, lookup

    handled = {f"lora:{entry.get('name') or Path(str(entry.get('path'))).stem}"
               for entry in request.get("loras") or [] if isinstance(entry, dict)}
    for label, record in files.items():
        kind = "loras" if label.startswith("lora:") else "embeddings" if label.startswith("embedding:") else None
        if kind is None or label in handled or not record.get("sha256"):
            continue
        name = label.split(":", 1)[1]
        now = lookup(kind, name, label)
        if now is None:
            found.missing.append(f"{label}: no {kind} file is named {name!r} any more (the prompt names it)")
        elif file_sha256(now.path) != record["sha256"]:
            found.missing.append(f"{label}: {now.path} has other content than the run used (sha256 "
                                 f"{record['sha256'][:10]}); the prompt names it, so it is used as it is")
    for index, entry in enumerate(found.request.get("controls") or []):
        record = files.get(f"controlnet:{index}") or {}
        if not isinstance(entry, dict) or not record.get("path") or not record.get("sha256"):
            continue
        # a ControlNet folder is recorded by its weights file: found again by it, the folder is what the run takes
        where = _relocate(f"controls.{index}.model", record["path"], record["sha256"], ("controlnet",), found)
        if where != record["path"]:
            entry["model"] = where
    if found.request.get("vae") and (files.get("vae") or {}).get("path"):
        record = files["vae"]
        found.request["vae"] = _relocate("vae", record["path"], record.get("sha256"), ("vae",), found)
    return found
