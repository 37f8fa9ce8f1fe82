"""Runs leave nothing behind: in one process, every task of every engine runs twice, with a scheduler
change and a LoRA run in between, and both outputs equal the direct diffusers call.

The direct calls are each plugin's own (its conformance class's ``direct``), so this test needs every
plugin under plugins/ installed, as the development environment has them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from codex_core import registry
from codex_core.model_cache import cache
from codex_diffusers.testing import EngineConformance, assert_same_pixels, cli_run, make_unet_lora, tiny_model_dir

pytestmark = pytest.mark.slow

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def conformance_classes() -> dict[str, type[EngineConformance]]:
    found = {}
    for path in sorted(PLUGINS.glob("*/tests/test_*.py")):
        if path.parts[-3].startswith("_"):  # the template: placeholders, tested by tests/test_template.py
            continue
        spec = importlib.util.spec_from_file_location(f"isolation_{path.parent.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, EngineConformance) and value.engine and value.cases:
                found[value.engine] = value
    return found


CLASSES = conformance_classes()
CASES = [(engine, task) for engine, cls in sorted(CLASSES.items()) for task in cls.cases]


def test_every_installed_engine_is_covered():
    assert set(CLASSES) == set(registry.engines())


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    return make_unet_lora("sd15", tmp_path_factory.mktemp("lora"))


@pytest.fixture
def roomy_cache():
    """Keep every model of the test loaded, so the in-between runs act on the cached pipelines."""
    cache.configure(max_models=16)
    yield
    cache.configure()


def _lora_run(engine: str, lora: Path, out: Path) -> None:
    """A speed-mode run with an accelerator LoRA: on the engine under test where it honours lcm, else on sd15."""
    target = engine if "lcm" in registry.get_engine(engine).modes else "sd15"
    lora_file = lora if target == "sd15" else make_unet_lora(target, out)
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "mode": "lcm",
               "mode_lora": {"path": str(lora_file), "scale": 1.0}}
    result = cli_run(["run", target, "txt2img", "--model", "tiny", "-q", "--out", str(out), "--json",
                      json.dumps(request)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["info"]["notes"]["mode_lora"]["unloaded_after_run"]


@pytest.mark.parametrize("engine, task", CASES, ids=[f"{e}-{t}" for e, t in CASES])
def test_a_task_runs_the_same_after_a_scheduler_change_and_a_lora_run(engine, task, lora, roomy_cache, tmp_path):
    suite = CLASSES[engine]()
    request, first = suite.run_case(task, tmp_path)
    sampler = suite.other_sampler(task, first["info"]["request"].get("sampler"))
    if sampler:  # the same engine and task with another scheduler on the same cached pipelines
        cli_run(["run", engine, task, "--model", "tiny", "-q", "--out", str(tmp_path / "sampler"), "--json",
                 json.dumps({**request, "sampler": sampler, "scheduler": "Automatic"})])
    _lora_run(engine, lora, tmp_path / "lora")
    again = suite.run_request(task, request, tmp_path / "again")
    assert again["info"]["model"]["reused_from_cache"] is True  # the cached pipelines, not a fresh load
    expected = suite.direct(task, first["info"]["request"], tiny_model_dir(engine))
    assert_same_pixels(suite.outputs(task, first), expected)
    assert_same_pixels(suite.outputs(task, again), expected)
