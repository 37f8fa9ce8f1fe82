"""The sleepy plugin: the engine, and the ``nap`` exporter (a text file, written slowly on request)."""

import time
from pathlib import Path

from codex_core import Exporter, hookimpl

from .engine import SleepyEngine


@hookimpl
def codex_register_engines(register):
    register(SleepyEngine())


def write_nap(output, files, info) -> list[Path]:
    request = info["request"]
    if request.get("sleep_in") == "export":
        time.sleep(request["sleep_seconds"])
    path = files.staging_dir / "nap.txt"
    path.write_text("slept\n", encoding="utf-8")
    return [path]


@hookimpl
def codex_register_exporters(register):
    register(Exporter("nap", "image", write_nap, "a text file, written after sleep_seconds when sleep_in is export"))
