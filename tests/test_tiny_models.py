"""The tiny-model cache knows what built each model: a stale one (another builder, edited code) is built again, and a
builder that makes another architecture is an error naming the problem, not a library error at load time."""

from __future__ import annotations

import json
import sys

import pytest

from codex_core import CodexError, Engine, Progress, Txt2ImgParams
from codex_core.tiny_models import ensure, package_digest, stamp


class Recorder(Progress):
    def __init__(self):
        super().__init__(enabled=False)
        self.lines = []

    def message(self, text):
        self.lines.append(text)


class MarkerEngine(Engine):
    """Builds a folder with a marker file; refuses folders without it (as a real engine refuses another family)."""

    key = "tiny_marker"
    tasks = {"txt2img": Txt2ImgParams}
    tiny_version = "1"
    recognises_checkpoints = True
    model_marker = "marker.json"
    built = 0
    writes = "marker.json"

    def build_tiny(self, dest):
        dest.mkdir(parents=True)
        (dest / self.writes).write_text("{}")
        type(self).built += 1

    def checkpoint_problem(self, path):
        return None if (path / "marker.json").is_file() else "it has no marker.json (another architecture)"


class OtherEngine(MarkerEngine):
    pass


def test_built_once_then_reused(tmp_path):
    engine, progress, dest = MarkerEngine(), Recorder(), tmp_path / "tiny_marker-1"
    before = MarkerEngine.built
    ensure(engine, dest, progress)
    ensure(engine, dest, progress)
    assert MarkerEngine.built == before + 1 and len(progress.lines) == 1
    assert json.loads((tmp_path / "tiny_marker-1.json").read_text()) == stamp(engine)


def test_a_model_another_engine_class_built_is_built_again_and_the_message_says_why(tmp_path):
    dest = tmp_path / "tiny_marker-1"
    ensure(OtherEngine(), dest, Recorder())
    progress = Recorder()
    ensure(MarkerEngine(), dest, progress)
    assert (f"stale (it was built by {__name__}.OtherEngine, not {__name__}.MarkerEngine)" in progress.lines[0])
    assert json.loads((tmp_path / "tiny_marker-1.json").read_text())["class"].endswith(".MarkerEngine")


def test_a_model_whose_builder_code_changed_is_built_again(tmp_path):
    engine, dest = MarkerEngine(), tmp_path / "tiny_marker-1"
    ensure(engine, dest, Recorder())
    record = tmp_path / "tiny_marker-1.json"
    record.write_text(json.dumps({**stamp(engine), "code": "the digest of older code"}))
    progress = Recorder()
    ensure(engine, dest, progress)
    assert "stale (the code that builds it changed since)" in progress.lines[0]
    record.unlink()  # a model from before the stamps existed
    progress = Recorder()
    ensure(engine, dest, progress)
    assert "stale (it has no record of what built it)" in progress.lines[0]


def test_a_builder_that_makes_another_architecture_is_an_error_and_leaves_nothing(tmp_path):
    class WrongBuilder(MarkerEngine):
        writes = "model_of_another_family.json"

    dest = tmp_path / "tiny_marker-1"
    with pytest.raises(CodexError, match="its build_tiny makes a model its own checks refuse: it has no marker.json"):
        ensure(WrongBuilder(), dest, Recorder())
    assert list(tmp_path.iterdir()) == []


def test_the_code_digest_follows_every_file_of_the_package(tmp_path, monkeypatch):
    package = tmp_path / "digest_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tiny.py").write_text("SIZE = 8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("digest_pkg")
    first = package_digest("digest_pkg")
    (package / "tiny.py").write_text("SIZE = 16\n")
    package_digest.cache_clear()
    assert package_digest("digest_pkg") != first
    sys.modules.pop("digest_pkg")
