"""The engine template: `codex new-engine NAME` makes a package that builds, installs, is listed and
passes its own conformance tests (output equal to a direct diffusers call), in a fresh process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codex_core.testing import cli_run

CODEX = Path(sys.executable).parent / "codex"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("new-engine")
    result = cli_run(["new-engine", "tiny_pix", "--dest", str(root)])
    assert result.exit_code == 0, result.stderr
    package = Path(result.stdout.strip())
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(package)],
                   check=True, capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k not in {"CODEX_LOAD_PLUGINS", "CODEX_DISABLE_PLUGINS"}}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
               CODEX_CACHE_DIR=str(root / "cache"))
    return {"package": package, "site": site, "env": env}


@pytest.mark.wheels
def test_the_package_has_every_placeholder_filled(generated):
    package = generated["package"]
    assert package.name == "codex-tiny-pix"
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/codex_tiny_pix/__init__.py", "src/codex_tiny_pix/engines.py",
                     "src/codex_tiny_pix/params.py", "src/codex_tiny_pix/plugin.py",
                     "src/codex_tiny_pix/presets/tiny_pix/txt2img.yaml", "src/codex_tiny_pix/tiny.py",
                     "tests/test_tiny_pix.py"]
    for path in package.rglob("*"):
        if path.is_file():
            assert "__NAME__" not in path.read_text() and "__PACKAGE__" not in path.read_text()
    assert "class TinyPixEngine(DiffusersEngine)" in (package / "src/codex_tiny_pix/engines.py").read_text()


@pytest.mark.wheels
def test_the_installed_engine_is_listed_and_runs(generated, tmp_path):
    run = lambda *args: subprocess.run([str(CODEX), *args], env=generated["env"], capture_output=True,  # noqa: E731
                                       text=True, timeout=600)
    engines = {row["engine"]: row for row in json.loads(run("engines", "--json").stdout)}
    assert engines["tiny_pix"]["distribution"] == "codex-tiny-pix" and engines["tiny_pix"]["tasks"] == ["txt2img"]
    proc = run("run", "tiny_pix", "txt2img", "--model", "tiny", "-q", "--out", str(tmp_path),
               "--json", '{"prompt": "a red fox", "width": 32, "height": 32, "steps": 2, "seed": 1}')
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)["info"]
    assert info["sampler_effective"] == "DPM++ 2M" and info["steps_done"] == 2
    assert Path(info["preset_files"][0]).is_relative_to(generated["site"])  # the presets inside the package


@pytest.mark.wheels
def test_its_own_conformance_tests_pass(generated):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", str(generated["package"] / "tests")],
                          cwd=generated["package"], env=generated["env"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=* ?\d+ passed(, \d+ warnings?)? in [\d.]+s( \([\d:]+\))? ?=*", summary), summary


@pytest.mark.parametrize("name, message", [("My Model", "is not an engine key"), ("class", "is not an engine key")])
def test_bad_names_exit_2(name, message, tmp_path):
    result = cli_run(["new-engine", name, "--dest", str(tmp_path)])
    assert result.exit_code == 2 and message in result.stderr and not any(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "codex-taken").mkdir()
    result = cli_run(["new-engine", "taken", "--dest", str(tmp_path)])
    assert result.exit_code == 2 and "exists already" in result.stderr


@pytest.mark.parametrize("name, expected", [("sd3", "SD3Engine"), ("my_model", "MyModelEngine"),
                                            ("ltx2_video", "LTX2VideoEngine"), ("flux2", "Flux2Engine")])
def test_the_engine_class_is_named_as_an_author_would(name, expected, tmp_path):
    result = cli_run(["new-engine", name, "--dest", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    engines = (Path(result.stdout.strip()) / f"src/codex_{name}/engines.py").read_text()
    assert f"class {expected}(DiffusersEngine)" in engines


def test_class_name_can_be_given_and_every_place_to_change_is_marked(tmp_path):
    result = cli_run(["new-engine", "sd3", "--class-name", "StableDiffusion3", "--dest", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    package = Path(result.stdout.strip())
    assert "class StableDiffusion3(DiffusersEngine)" in (package / "src/codex_sd3/engines.py").read_text()
    assert f'grep -rn "STARTING POINT" {package}' in result.stderr
    marked = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()
              and "STARTING POINT" in p.read_text()}
    assert marked == {"README.md", "src/codex_sd3/engines.py", "src/codex_sd3/params.py", "src/codex_sd3/tiny.py",
                      "src/codex_sd3/presets/sd3/txt2img.yaml", "tests/test_sd3.py"}
    refused = cli_run(["new-engine", "sd4", "--class-name", "not a class", "--dest", str(tmp_path)])
    assert refused.exit_code == 2 and "--class-name: 'not a class' is not a class name; e.g. SD4Engine" in refused.stderr
