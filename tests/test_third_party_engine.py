"""A third-party engine package, built and installed for real, driven by the `codex` CLI.

tests/example_engine is a separate distribution (codex-example-engine) that depends on codex-core
only. It is installed with pip into a temporary folder and put on PYTHONPATH of `codex`
subprocesses: the core must find it through the entry point, fill its presets, validate its
requests and run it, without knowing anything about it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

pytestmark = pytest.mark.wheels

EXAMPLE = Path(__file__).parent / "example_engine"
CODEX = Path(sys.executable).parent / "codex"
REQUEST = {"prompt": "x", "seed": 3, "width": 48, "height": 32}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the example package (its wheel, built by hatchling) into a folder of its own."""
    target = tmp_path_factory.mktemp("example_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    return target


@pytest.fixture(scope="module")
def codex(installed, tmp_path_factory):
    """Run `codex ARGS...` with the example package importable; returns the CompletedProcess."""
    workdir = tmp_path_factory.mktemp("workdir")
    base_env = {k: v for k, v in os.environ.items()
                if k not in {"CODEX_LOAD_PLUGINS", "CODEX_DISABLE_PLUGINS", "CODEX_PRESETS_DIR", "CODEX_DEBUG"}}
    base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(installed), os.environ.get("PYTHONPATH")]))
    base_env["CODEX_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    base_env["CODEX_MODELS_DIR"] = str(workdir / "models")

    def call(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CODEX), *args], env={**base_env, **env}, cwd=workdir,
                              capture_output=True, text=True, timeout=300)

    return call


def _run(codex, out: Path, **request) -> dict:
    proc = codex("run", "example_gradient", "txt2img", "--model", "tiny", "-q",
                 "--json", json.dumps({**REQUEST, **request}), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _pixels(result: dict) -> bytes:
    [png] = [f for f in result["files"] if f.endswith(".png")]
    with Image.open(png) as image:
        return image.convert("RGB").tobytes()


def _engines(codex, **env) -> dict[str, dict]:
    proc = codex("engines", "--json", **env)
    assert proc.returncode == 0, proc.stderr
    return {row["engine"]: row for row in json.loads(proc.stdout)}


def test_listed_next_to_first_party_engines(codex):
    engines = _engines(codex)
    assert {"sd15", "sdxl", "example_gradient"} <= set(engines)
    row = engines["example_gradient"]
    assert row["distribution"] == "codex-example-engine"
    assert row["version"] == "0.1.0"
    assert row["tasks"] == ["txt2img"]
    assert row["sampler_family"] is None
    assert row["tiny_model"] is True


@pytest.mark.parametrize("name", ["example", "codex-example-engine"])
def test_disable_plugins_hides_it(codex, name):
    engines = _engines(codex, CODEX_DISABLE_PLUGINS=name)
    assert "example_gradient" not in engines
    assert {"sd15", "sdxl"} <= set(engines)


def test_run_writes_png_and_info(codex, installed, tmp_path):
    result = _run(codex, tmp_path / "out")
    names = sorted(Path(f).name for f in result["files"])
    assert names == ["0000.png", "info.json"]
    for f in result["files"]:
        assert Path(f).is_file() and Path(f).parent == tmp_path / "out" / Path(result["run_dir"]).name
    [png] = [f for f in result["files"] if f.endswith(".png")]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (48, 32)

    info = result["info"]
    assert info == json.loads((Path(result["run_dir"]) / "info.json").read_text())
    # The preset of the *installed* package filled exactly the fields the request left out.
    [preset_file] = info["preset_files"]
    assert Path(preset_file).is_relative_to(installed)
    preset = yaml.safe_load(Path(preset_file).read_text())
    assert info["applied_preset_patch"] == {k: v for k, v in preset.items() if k not in REQUEST}
    assert info["applied_preset_patch"]  # the preset did fill something (steps, cfg)
    assert info["request"]["steps"] == preset["steps"] == info["steps_done"]
    assert info["model"]["kind"] == "tiny"
    assert info["versions"]["codex-example-engine"] == "0.1.0"
    assert "sampler_effective" not in info  # sampler_family=None: no sampler was resolved


def test_same_seed_same_pixels_other_seed_other_pixels(codex, tmp_path):
    first = _run(codex, tmp_path / "a")
    again = _run(codex, tmp_path / "b")
    other = _run(codex, tmp_path / "c", seed=4)
    assert _pixels(first) == _pixels(again)
    assert _pixels(first) != _pixels(other)


@pytest.mark.parametrize("field, value", [("steps", "20"), ("sampler", "Euler")])
def test_bad_request_exits_2_and_writes_nothing(codex, tmp_path, field, value):
    out = tmp_path / "out"
    proc = codex("run", "example_gradient", "txt2img", "--model", "tiny",
                 "--json", json.dumps({**REQUEST, field: value}), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert f"{field}: got {value!r}" in proc.stderr
    assert not out.exists() or not any(out.iterdir())


# -- every hook, implemented by this installed plugin and exercised through the CLI --------------------


def _exercise_engines(codex, tmp_path):
    assert "example_gradient" in _engines(codex)
    assert _run(codex, tmp_path / "out")["info"]["engine"] == "example_gradient"


def _exercise_samplers(codex, tmp_path):
    table = json.loads(codex("samplers", "sd15", "--json").stdout)
    row = next(r for r in table["samplers"] if r["sampler"] == "Euler Trailing")
    assert row["class"] == "EulerDiscreteScheduler" and row["flags"] == {"timestep_spacing": "trailing"}


def _exercise_exporters(codex, tmp_path):
    proc = codex("run", "example_gradient", "txt2img", "--model", "tiny", "-q", "--format", "png,txt",
                 "--json", json.dumps(REQUEST), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    [txt] = [Path(f) for f in json.loads(proc.stdout)["files"] if f.endswith(".txt")]
    assert txt.read_text().startswith("x\nSteps: ") and "Seed: 3" in txt.read_text()


def _exercise_commands(codex, tmp_path):
    proc = codex("example-hello", "tests")
    assert proc.returncode == 0 and proc.stdout == "hello, tests, from codex-example-engine\n"
    assert "example-hello" in codex("--help").stdout


def _exercise_run_options(codex, tmp_path):
    """The plugin's --gradient-gamma: in every command that runs models, recorded in info.json, replayed."""
    for command in ("run", "batch", "grid", "serve", "replay"):
        assert "--gradient-gamma" in codex(command, "--help").stdout, command
    plain = _run(codex, tmp_path / "plain")
    proc = codex("run", "example_gradient", "txt2img", "--model", "tiny", "-q", "--gradient-gamma", "2.2",
                 "--json", json.dumps(REQUEST), "--out", str(tmp_path / "gamma"))
    assert proc.returncode == 0, proc.stderr
    gamma = json.loads(proc.stdout)
    assert gamma["info"]["gradient_gamma"] == 2.2 and plain["info"]["gradient_gamma"] == 1.0
    assert _pixels(gamma) != _pixels(plain)  # the option reached the engine
    [png] = [f for f in gamma["files"] if f.endswith(".png")]
    replayed = codex("replay", png, "--check", "-q", "--out", str(tmp_path / "replay"))
    assert replayed.returncode == 0, replayed.stderr
    again = json.loads(replayed.stdout)
    assert again["check"]["identical"] and again["info"]["gradient_gamma"] == 2.2
    batch_file = tmp_path / "batch.jsonl"
    batch_file.write_text(json.dumps({"id": "g", "engine": "example_gradient", "task": "txt2img", "model": "tiny",
                                      "request": REQUEST}) + "\n")
    batch = codex("batch", str(batch_file), "--gradient-gamma", "2.2", "-q", "--out", str(tmp_path / "batch"))
    assert batch.returncode == 0, batch.stderr
    info = json.loads((tmp_path / "batch" / "g" / "info.json").read_text())
    assert info["gradient_gamma"] == 2.2
    with Image.open(tmp_path / "batch" / "g" / "0000.png") as image:
        assert image.convert("RGB").tobytes() == _pixels(gamma)
    grid = codex("grid", "example_gradient", "txt2img", "--model", "tiny", "-q", "--gradient-gamma", "2.2", "--json",
                 json.dumps(REQUEST), "--x", "seed=3,4", "--id", "g", "--out", str(tmp_path / "grid"))
    assert grid.returncode == 0, grid.stderr
    assert {json.loads(p.read_text())["gradient_gamma"] for p in (tmp_path / "grid").glob("*/info.json")} == {2.2}
    refused = codex("run", "sd15", "txt2img", "--model", "tiny", "--gradient-gamma", "2", "--json", '{"prompt": "x"}',
                    "--out", str(tmp_path / "sd"))
    assert refused.returncode == 2 and "--gradient-gamma: engine sd15 does not take it" in refused.stderr
    bad = codex("run", "example_gradient", "txt2img", "--model", "tiny", "--gradient-gamma", "0", "--json",
                json.dumps(REQUEST), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--gradient-gamma: got 0.0; a gamma is above 0" in bad.stderr
    assert not (tmp_path / "sd").exists() and not (tmp_path / "bad").exists()


def _exercise_preprocessors(codex, tmp_path):
    """The plugin's posterize: listed beside the core's, run by `codex preprocess`, its parameter range enforced."""
    listed = {row["name"]: row for row in json.loads(codex("preprocess", "--list", "--json").stdout)}
    assert "canny" in listed and listed["posterize"]["parameters"]["bits"]["maximum"] == 8
    Image.linear_gradient("L").resize((32, 16)).convert("RGB").save(tmp_path / "ramp.png")
    proc = codex("preprocess", "posterize", str(tmp_path / "ramp.png"), "--param", "bits=1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    with Image.open(proc.stdout.strip()) as image:
        assert set(image.convert("L").tobytes()) == {0, 128}  # one bit per channel: two levels
    bad = codex("preprocess", "posterize", str(tmp_path / "ramp.png"), "--param", "bits=9")
    assert bad.returncode == 2 and "--param bits: got 9" in bad.stderr


EXERCISES = {"codex_register_engines": _exercise_engines, "codex_register_samplers": _exercise_samplers,
             "codex_register_exporters": _exercise_exporters, "codex_register_commands": _exercise_commands,
             "codex_register_run_options": _exercise_run_options,
             "codex_register_preprocessors": _exercise_preprocessors}


@pytest.mark.parametrize("hook", sorted(name for name in dir(__import__("codex_core.hookspecs").hookspecs)
                                        if name.startswith("codex_")))
def test_every_hook_is_implemented_by_an_installed_plugin_and_takes_effect(codex, hook, tmp_path):
    rows = {row["name"]: row for row in json.loads(codex("plugins", "--json").stdout)}
    assert hook in rows["example"]["hooks"], f"the example plugin does not implement {hook}"
    assert hook in EXERCISES, f"no test shows {hook} taking effect"
    EXERCISES[hook](codex, tmp_path)
