"""The checkpoints the A1111 layer knows (``sd-models``), the current one and the options kept with it.

A checkpoint is each file or folder of the models folders that an installed image engine runs, with
A1111's title "name.safetensors [hash]", and ``tiny-<engine>`` for each engine's random-weight test
model. A client names one by its title, model name, file name (with or without its folder or
suffix), short hash or sha256 (``find``), as A1111's own aliases allow.

A current checkpoint always exists, as in A1111 (clients that never choose one work): ``--default-model``,
else the one last chosen with ``POST /sdapi/v1/options`` (kept in the state dir, so a restart keeps
it), else the first one found: files and folders before tiny models, and among those first the tiny
models of engines that take A1111's own (discrete) samplers, by engine key.
The options Codex honours (``sd_vae``, ``CLIP_stop_at_last_layers``) are kept in the same file.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fastapi.datastructures import State

from ...errors import UsageError
from ...outputs import write_json

STATE_FILE = "a1111-options.json"
# options.<name> -> its value when never set (A1111's defaults)
OPTION_DEFAULTS: dict[str, Any] = {"sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1}
RESCAN_SECONDS = 10.0  # a name not found scans the folders again, at most this often (each bad name is not a scan)
SHOWN = ("title", "model_name", "hash", "sha256", "filename", "config")  # what sd-models lists of each


def models() -> list[dict[str, Any]]:
    """Every runnable checkpoint (files and folders of the models folders first, then tiny models): A1111's
    fields (``SHOWN``) and the ``engine`` and ``model`` argument of the jobs that run it."""
    from ... import model_files
    from ...registry import engines

    found = []
    image_engines = [e.key for e in engines().values() if "txt2img" in e.tasks]
    for row in model_files.describe(["checkpoints"], hashes=True):
        engine_key = next((key for key in row["engines"] if key in image_engines), None)
        if engine_key is None:
            continue
        path = Path(row["path"])
        try:  # computed for the short hash already (cached); None for a folder
            sha256 = model_files.file_sha256(path) if row["hash"] and path.is_file() else None
        except (OSError, UsageError):  # the file went away since the scan
            sha256 = None
        name = row["name"] + (path.suffix if path.is_file() else "")
        found.append({"title": f"{name} [{row['hash']}]" if row["hash"] else name, "model_name": row["name"],
                      "hash": row["hash"], "sha256": sha256, "filename": row["path"], "config": None,
                      "engine": engine_key, "model": row["path"]})
    for key in image_engines:
        if engines()[key].tiny_version:
            found.append({"title": f"tiny-{key}", "model_name": f"tiny-{key}", "hash": None, "sha256": None,
                          "filename": "tiny", "config": None, "engine": key, "model": "tiny"})
    return found


def find(value: str, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry ``value`` names: its title, model name, path, file name (with or without the suffix), short
    hash or sha256, in that order of preference; None if none."""
    value = value.strip()

    def names(entry: dict[str, Any]) -> list[tuple[int, str | None]]:
        path = Path(entry["filename"]) if entry["model"] != "tiny" else None
        return [(0, entry["title"]), (1, entry["model_name"]), (2, entry["filename"] if path else None),
                (3, path.name if path else None), (4, entry["title"].rsplit(" [", 1)[0]), (5, entry["hash"]),
                (5, entry["sha256"]), (6, path.stem if path else None)]

    matches = [(rank, index) for index, entry in enumerate(entries) for rank, name in names(entry) if name == value]
    return entries[min(matches)[1]] if matches else None


class Checkpoints:
    """The A1111 layer's state (``app.state.a1111``): the checkpoint list, the current checkpoint, the options."""

    def __init__(self, state_dir: Path, default_model: str | None = None):
        self.path, self.default_model = state_dir / STATE_FILE, default_model
        self.lock = threading.RLock()  # routes run in the threadpool
        self._entries: list[dict[str, Any]] | None = None
        self._scanned = 0.0  # when the models folders were last scanned (time.monotonic)
        self._current: dict[str, Any] | None = None
        self.options = {**OPTION_DEFAULTS, **{key: value for key, value in self._saved().items()
                                              if key in OPTION_DEFAULTS}}

    def entries(self, refresh: bool = False) -> list[dict[str, Any]]:
        """The checkpoints, scanned once and again on ``refresh`` (``refresh-checkpoints``, or a name not found)."""
        with self.lock:
            if self._entries is None or refresh:
                self._entries, self._scanned = models(), time.monotonic()
                if self._current is not None:  # the same file, with what the scan says of it now
                    self._current = find(self._current["filename"], self._entries) or self._current
            return self._entries

    def lookup(self, value: Any, field: str) -> dict[str, Any]:
        """The checkpoint ``value`` names (the folders scanned again when it names none, unless they just were); a
        UsageError naming ``field``."""
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{field}: got {value!r}; a title from GET /sdapi/v1/sd-models")
        found = find(value, self.entries())
        if found is None and time.monotonic() - self._scanned > RESCAN_SECONDS:  # a file added since? look again
            found = find(value, self.entries(refresh=True))
        if found is None:
            titles = [entry["title"] for entry in self.entries()]
            raise UsageError(f"{field}: no model titled {value[:200]!r}; see GET /sdapi/v1/sd-models",
                             hint="a title, model name, file name or short hash; known: " + ", ".join(titles[:12]))
        return found

    def current(self) -> dict[str, Any]:
        with self.lock:
            if self._current is None:
                self._current = self._initial()
            return self._current

    def select(self, entry: dict[str, Any]) -> None:
        """Make ``entry`` the current checkpoint, and keep the choice for the next start."""
        with self.lock:
            self._current = entry
            self._save()

    def set_option(self, name: str, value: Any) -> None:
        with self.lock:
            self.options[name] = value
            self._save()

    def check_default(self) -> None:
        """``--default-model`` names a checkpoint: checked at start (a UsageError naming the option)."""
        if self.default_model is not None:
            self._current = self.lookup(self.default_model, "--default-model")

    def _initial(self) -> dict[str, Any]:
        entries = self.entries()
        if self.default_model is not None:
            return self.lookup(self.default_model, "--default-model")
        saved = self._saved().get("sd_model_checkpoint")
        if isinstance(saved, str):
            found = find(saved, entries)
            if found is not None:
                return found
            print(f"codex: the A1111 checkpoint chosen before, {saved!r}, is gone; using another", file=sys.stderr)
        real = [entry for entry in entries if entry["model"] != "tiny"]
        tiny = [entry for entry in entries if entry["model"] == "tiny"]
        tiny.sort(key=_tiny_preference)
        if not real and not tiny:
            raise UsageError("no checkpoint: no installed engine makes images",
                             hint="install an engine plugin, e.g. pip install codex-sd")
        return (real or tiny)[0]

    def _saved(self) -> dict[str, Any]:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # none yet, or unreadable: the defaults
            return {}
        return saved if isinstance(saved, dict) else {}

    def _save(self) -> None:
        chosen = {"sd_model_checkpoint": self._current["title"]} if self._current else {}
        try:
            write_json(self.path, {**chosen, **self.options})
        except OSError as exc:  # the choice holds until the service stops; say why it will not survive it
            print(f"codex: cannot keep the A1111 options in {self.path}: {exc.strerror or exc}", file=sys.stderr)


def _tiny_preference(entry: dict[str, Any]) -> tuple[bool, str]:
    """Tiny models of engines that take A1111's samplers first (a client's defaults, "Euler a", run there)."""
    from ...registry import get_engine

    return (get_engine(entry["engine"]).sampler_family != "discrete", entry["engine"])


def current_model(state: State) -> dict[str, Any]:
    """The current checkpoint's ``models()`` entry."""
    return state.a1111.current()


def _engine(state: State):
    from ...registry import get_engine

    return get_engine(current_model(state)["engine"])
