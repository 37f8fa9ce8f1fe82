"""The `codex` CLI: light commands stay torch-free, outputs and errors are what users read."""

import json
import os
import re
import subprocess
import sys

import click
import pytest

from codex_core import hookimpl, plugins, registry
from codex_core.testing import cli_run, run_json

@pytest.fixture
def only_codex_sd(monkeypatch):
    """Only the codex-sd plugin loaded, whatever else is installed here."""
    monkeypatch.setenv("CODEX_LOAD_PLUGINS", "sd")
    plugins.reset_for_tests()
    yield
    monkeypatch.delenv("CODEX_LOAD_PLUGINS")
    plugins.reset_for_tests()


LIGHT_COMMANDS = [
    ["--help"], ["engines"], ["engines", "--json"], ["plugins"], ["schema", "sd15", "txt2img"],
    ["presets", "sd15"], ["samplers", "sd15"], ["run", "--help"], ["presets", "--matrix"],
    ["docs", "param-matrix"],
    ["run", "sd15", "txt2img", "--json", '{"prompt": "x", "steps": "20"}'],
    ["run", "wan_ti2v_5b", "txt2vid", "--json", '{"prompt": "x"}'],
]


def test_commands_that_need_no_model_do_not_import_torch():
    script = f"""
import json, sys
from click.testing import CliRunner
from codex_core.cli import cli
from codex_core.registry import register_commands
register_commands(cli)
codes = [CliRunner().invoke(cli, args).exit_code for args in {LIGHT_COMMANDS!r}]
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)}}))
"""
    env = {**os.environ, "CODEX_LOAD_PLUGINS": "sd"}  # so that wan_ti2v_5b is an engine that is not installed
    result = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                       check=True, env=env).stdout)
    assert result["heavy"] == []
    assert result["codes"] == [0] * 10 + [2, 2]


def test_engines_json_lists_tasks_modes_and_package():
    rows = json.loads(cli_run(["engines", "--json"]).stdout)
    sd15 = next(r for r in rows if r["engine"] == "sd15")
    assert sd15["tasks"] == ["txt2img", "img2img", "inpaint", "upscale"]
    assert sd15["modes"] == ["normal", "lcm", "turbo"] and sd15["distribution"] == "codex-sd" and sd15["tiny_model"] is True


def test_schema_is_strict_and_shows_preset_defaults():
    schema = json.loads(cli_run(["schema", "sd15", "txt2img"]).stdout)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["prompt"]  # everything else has a preset or a default
    assert schema["properties"]["width"]["default"] == 512
    assert "DPM++ 2M" in schema["properties"]["sampler"]["examples"]
    img2img = json.loads(cli_run(["schema", "sd15", "img2img"]).stdout)
    assert img2img["required"] == ["prompt", "init_image"]
    assert "mode" in schema["properties"]  # sd15 has speed modes; an engine without them has no mode field
    assert "mode" not in json.loads(cli_run(["schema", "flux", "txt2img"]).stdout)["properties"]


def test_presets_and_samplers_commands():
    presets = json.loads(cli_run(["presets", "sd15", "upscale"]).stdout)
    assert presets["upscale"]["values"]["upscale_factor"] == 2.0
    assert presets["upscale"]["files"][0].endswith("presets/sd15/upscale.yaml")
    table = cli_run(["samplers", "sd15"]).stdout
    assert "DPM++ 2M SDE" in table and "EulerAncestralDiscreteScheduler" in table


@pytest.mark.parametrize("args, message", [
    (["run", "wan_ti2v_5b", "txt2vid"], "provided by codex-wan, which is installed but not in CODEX_LOAD_PLUGINS"),
    (["run", "sd15", "txt2vid"], "engine 'sd15' has no task 'txt2vid'; its tasks: txt2img"),
    (["run", "sd15", "txt2img", "--json", "{bad"], "--json: not valid JSON: Expecting property name"),
    (["run", "sd15", "txt2img", "--json", "[1]"], "must be a JSON object"),
    (["run", "sd15", "txt2img", "--json", "@/nonexistent.json"], "no such file"),
    (["run", "sd15", "txt2img", "--json", '{"prompt": "x"}', "--format", "mp4"], "--format: 'mp4'"),
    (["run", "sd15", "txt2img", "--json", '{"prompt": "x"}', "--device", "tpu"], "--device: unknown device"),
    (["schema", "sd15", "nope"], "has no task 'nope'"),
])
def test_usage_errors_exit_2_with_a_clear_message(args, message, tmp_path, only_codex_sd):
    result = cli_run([*args, "--out", str(tmp_path / "out")] if args[0] == "run" else args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_model_not_found_lists_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("CODEX_MODEL_SD15", raising=False)
    result = cli_run(["run", "sd15", "txt2img", "--out", str(tmp_path / "out"), "--json", '{"prompt": "x"}'])
    assert result.exit_code == 2
    for place in ("--model (not given)", "$CODEX_MODEL_SD15 (not set)", "models/sd15",
                  "stable-diffusion-v1-5/stable-diffusion-v1-5 in the local Hugging Face cache", "--model tiny"):
        assert place in result.stderr
    assert not (tmp_path / "out").exists()


def test_request_from_file_and_stdin(tmp_path):
    request = {"prompt": "from a file", "width": 32, "height": 32, "steps": 1, "seed": 2}
    (tmp_path / "r.json").write_text(json.dumps(request))
    from_file = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out", str(tmp_path / "a"),
                         "--json", f"@{tmp_path / 'r.json'}"])
    from_stdin = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out", str(tmp_path / "b"),
                          "--json", "-"], input=json.dumps(request))
    assert from_file.exit_code == from_stdin.exit_code == 0
    assert json.loads(from_file.stdout)["info"]["request"] == json.loads(from_stdin.stdout)["info"]["request"]


def test_info_prints_what_is_embedded(tmp_path):
    result = run_json("sd15", "txt2img", {"prompt": "a fox", "negative_prompt": "rain", "width": 32, "height": 32,
                                          "steps": 2, "seed": 5}, tmp_path / "out")
    png = result["files"][0]
    text = cli_run(["info", png, "--parameters"]).stdout.splitlines()
    assert text[:2] == ["a fox", "Negative prompt: rain"]
    assert text[2].startswith("Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 5, "
                              "Size: 32x32, Model: tiny")
    embedded = json.loads(cli_run(["info", png]).stdout)
    assert embedded["codex"]["request"] == result["info"]["request"]
    folder = json.loads(cli_run(["info", result["run_dir"]]).stdout)
    assert folder["run_id"] == result["info"]["run_id"]


def test_plugin_commands_are_added():
    class CommandPlugin:
        @hookimpl
        def codex_register_commands(self, cli):
            @cli.command()
            def hello():
                """Say hello."""
                click.echo("hello from a plugin")

    plugins.load_plugins()
    plugins.pm.register(CommandPlugin(), name="command-plugin")
    try:
        assert cli_run(["hello"]).stdout == "hello from a plugin\n"
    finally:
        plugins.pm.unregister(name="command-plugin")
        from codex_core.cli import cli

        cli.commands.pop("hello", None)
        registry.clear_cache()


# The run options `codex run` and `codex serve` had before they became data (issue 20): the same flags, now
# generated from the one table.
RUN_FLAGS = ["--device", "--dtype", "--allow-pickle", "--offload", "--vae-decode", "--vae-tiling", "--weights",
             "--compile", "--compile-backend", "--attention", "--parallel"]


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", help_text, re.M))


def test_run_batch_grid_and_serve_list_the_run_options_from_the_one_table():
    from codex_core.run_options import table

    flags = {flag for option in table().values() for flag in (option.flag, *option.shortcuts)}
    assert flags == set(RUN_FLAGS)
    for command in ("run", "batch", "grid"):
        assert _flags(cli_run([command, "--help"]).stdout) >= flags, command
    served = _flags(cli_run(["serve", "--help"]).stdout)
    assert served >= flags - {"--device", "--allow-pickle"} and not served & {"--device", "--allow-pickle"}
