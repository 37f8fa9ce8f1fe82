"""Shared test helpers and the conformance suite every engine plugin's tests subclass.

A plugin's test module does::

    from codex_core.testing import EngineConformance, pytest_generate_tests  # noqa: F401

    class TestSD15(EngineConformance):
        engine = "sd15"
        cases = {"txt2img": {...}, ...}          # small requests, one per task
        def direct(self, task, request, model_dir): ...  # the same call made on diffusers directly

and gets, for every task: our output equals the direct diffusers call to the pixel, the run is
recorded faithfully in info.json and the PNG, and bad requests exit 2 naming the field with
nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner
from PIL import Image


def cli_run(args: list[str], input: str | None = None):
    """Invoke the ``codex`` CLI in-process (plugins' commands included); returns click's Result."""
    from .cli import cli
    from .registry import register_commands

    register_commands(cli)
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def run_json(engine: str, task: str, request: dict, out: Path, model: str = "tiny", *extra: str) -> dict:
    """Run through the CLI and return its JSON result; fails with the CLI's stderr on error."""
    result = cli_run(["run", engine, task, "--model", model, "--out", str(out), "--quiet",
                      "--json", json.dumps(request), *extra])
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return json.loads(result.stdout)


def pixels(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def write_test_image(path: Path, size: tuple[int, int], seed: int = 0, mode: str = "RGB") -> str:
    """A deterministic noisy image (or, for mode "L", a mask with a white centre square)."""
    rng = np.random.default_rng(seed)
    width, height = size
    if mode == "L":
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
        Image.fromarray(mask, "L").save(path)
    else:
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").save(path)
    return str(path)


def tiny_model_dir(engine: str) -> Path:
    """Build (once) and return the engine's tiny model folder, through the engine's own builder."""
    from . import registry, sources
    from .progress import Progress

    spec = registry.get_engine(engine)
    path = sources.tiny_path(spec, spec.tiny_version)
    spec.load_engine().ensure_tiny(path, Progress(enabled=False))
    return path


_direct_pipes: dict = {}


def direct_pipe(pipeline_cls, folder: Path, **overrides):
    """A pipeline loaded straight from ``folder`` with diffusers (fp32, CPU), once per class, folder and
    overrides, with the checkpoint's own scheduler config: the reference side of a conformance test."""
    key = (pipeline_cls, str(folder), tuple(sorted(overrides.items(), key=lambda item: item[0])))
    if key not in _direct_pipes:
        pipe = pipeline_cls.from_pretrained(folder, **overrides)
        pipe.set_progress_bar_config(disable=True)
        _direct_pipes[key] = (pipe, dict(pipe.scheduler.config))
    return _direct_pipes[key]


def pytest_generate_tests(metafunc):
    """Parametrise conformance tests over the subclass's tasks and bad requests."""
    cls = metafunc.cls
    if cls is None or not issubclass(cls, EngineConformance):
        return
    if "task" in metafunc.fixturenames:
        metafunc.parametrize("task", list(cls.cases))
    if "bad_case" in metafunc.fixturenames:
        metafunc.parametrize("bad_case", cls.bad_requests, ids=[c[0] for c in cls.bad_requests])


class EngineConformance:
    engine: str = ""
    cases: dict[str, dict[str, Any]] = {}
    # (id, task, request, field the error must name)
    bad_requests: list[tuple[str, str, dict[str, Any], str]] = []

    def direct(self, task: str, request: dict[str, Any], model_dir: Path) -> list[Image.Image]:
        """Make the same call on the diffusers pipeline directly, without codex code."""
        raise NotImplementedError

    def request_for(self, task: str, tmp_path: Path) -> dict[str, Any]:
        """The case for ``task``, with ``{tmp}`` in string values replaced by the test's folder."""
        return {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in self.cases[task].items()}

    def prepare_inputs(self, tmp_path: Path) -> None:
        """Write input images the cases refer to (override to add more)."""
        write_test_image(tmp_path / "init.png", (64, 64), seed=1)
        write_test_image(tmp_path / "small.png", (32, 32), seed=2)
        write_test_image(tmp_path / "mask.png", (64, 64), mode="L")

    # -- the suite ------------------------------------------------------------------------------

    def test_engine_is_registered(self):
        from .registry import get_engine

        spec = get_engine(self.engine)
        assert set(self.cases) == set(spec.tasks), "every task of the engine needs a conformance case"

    def is_video(self, task: str) -> bool:
        from .registry import get_engine

        return get_engine(self.engine).output_kind(task) == "video"

    def run_case(self, task: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        self.prepare_inputs(tmp_path)
        request = self.request_for(task, tmp_path)
        extra = ("--format", "frames,mp4") if self.is_video(task) else ()
        return request, run_json(self.engine, task, request, tmp_path / "out", "tiny", *extra)

    def test_output_equals_direct_diffusers_call(self, task, tmp_path):
        request, result = self.run_case(task, tmp_path)
        info = result["info"]
        expected = self.direct(task, info["request"], tiny_model_dir(self.engine))
        if self.is_video(task):
            ours = sorted(f for f in result["files"] if Path(f).parent.name == "frames")
            assert len(ours) == len(expected) == info["request"]["num_frames"]
        else:
            ours = [f for f in result["files"] if f.endswith(".png")]
            assert len(ours) == len(expected) == info["request"].get("batch_size", 1)
        for mine, theirs in zip(ours, expected):
            assert pixels(mine).shape == pixels(theirs).shape
            assert np.array_equal(pixels(mine), pixels(theirs)), f"codex output {mine} differs from diffusers"
        assert info["seed"] == request["seed"] and info["task"] == task and info["engine"] == self.engine
        assert info["steps_done"] > 0 and set(info["timings"]) >= {"load", "denoise", "decode", "export", "total"}

    def test_outputs_record_the_run(self, task, tmp_path):
        from .inspect_outputs import read_info

        request, result = self.run_case(task, tmp_path)
        run_dir = Path(result["run_dir"])
        on_disk = json.loads((run_dir / "info.json").read_text())
        assert on_disk["request"] == result["info"]["request"]
        if self.is_video(task):
            from .exporters.video import probe

            video = on_disk["video"]
            seen = probe(Path(video["path"]))
            assert seen["frames"] == video["frames"] == on_disk["request"]["num_frames"]
            assert seen["fps"] == video["fps"] == on_disk["request"]["fps"]
            assert (seen["width"], seen["height"]) == (video["width"], video["height"]) == (
                on_disk["request"]["width"], on_disk["request"]["height"])
            embedded = read_info(Path(video["path"]))
        else:
            assert sorted(p.name for p in run_dir.iterdir()) == sorted(Path(f).name for f in result["files"])
            embedded = read_info(run_dir / "0000.png")
            assert f"Seed: {request['seed']}" in embedded["parameters"]
        assert embedded["codex"]["request"] == on_disk["request"]
        # fill-only: everything the request gave is unchanged, the patch is exactly the rest
        for key, value in request.items():
            assert on_disk["request"][key] == value and key not in on_disk["applied_preset_patch"]

    def test_bad_request_exits_2_and_writes_nothing(self, bad_case, tmp_path):
        _, task, request, field = bad_case
        self.prepare_inputs(tmp_path)
        request = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in request.items()}
        out = tmp_path / "out"
        result = cli_run(["run", self.engine, task, "--model", "tiny", "--out", str(out), "--json", json.dumps(request)])
        assert result.exit_code == 2, result.stderr
        assert field in result.stderr, result.stderr
        assert not out.exists() or not any(out.iterdir())
