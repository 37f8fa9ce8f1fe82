"""Every command reaches each exit code the README's table gives it, and no other.

0 success; 1 a failure that is not the user's input (or, for `replay --check`, outputs that differ);
2 a usage or validation error (nothing loaded, nothing written); 130 interrupted (SIGINT/SIGTERM).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
from pathlib import Path

import pytest

from codex_core import registry
from codex_core.testing import cli_run, free_port, interrupted, run_json

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1}


@pytest.fixture(scope="module")
def a_run(tmp_path_factory) -> dict:
    return run_json("sd15", "txt2img", SMALL, tmp_path_factory.mktemp("exit-codes") / "runs")


def _cases(tmp: Path, a_run: dict) -> dict[str, list[tuple[int, list[str]]]]:
    png = str(Path(a_run["run_dir"]) / "0000.png")
    (tmp / "notes.txt").write_text("not an output")
    (tmp / "taken").mkdir(exist_ok=True)
    (tmp / "taken" / "codex-taken").mkdir(exist_ok=True)
    run = ["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out", str(tmp / "out")]
    return {
        "run": [(0, [*run, "--json", json.dumps(SMALL)]), (2, [*run, "--json", '{"prompt": "x", "steps": "2"}'])],
        "replay": [(0, ["replay", png, "--check", "-q", "--out", str(tmp / "again")]),
                   (2, ["replay", str(tmp / "notes.txt")])],
        "info": [(0, ["info", png]), (2, ["info", str(tmp / "notes.txt")])],
        "schema": [(0, ["schema", "sd15", "txt2img"]), (2, ["schema", "sd15", "txt2vid"])],
        "presets": [(0, ["presets", "sd15"]), (2, ["presets", "sd15", "--mode", "warp"])],
        "samplers": [(0, ["samplers", "sd15"]), (2, ["samplers", "no_such_engine"])],
        "engines": [(0, ["engines"]), (2, ["engines", "--bogus"])],
        "plugins": [(0, ["plugins", "--json"]), (2, ["plugins", "--bogus"])],
        "models": [(0, ["models", "--json"]), (2, ["models", "--engine", "no_such_engine"]), (2, ["models", "--bogus"])],
        "docs": [(0, ["docs", "engine-catalog"]), (2, ["docs", "no-such-doc"])],
        # serve's 0, a clean stop on SIGTERM, needs a running service: tests/test_serve.py
        "serve": [(2, ["serve", "--host", "0.0.0.0", "--state-dir", str(tmp / "serve")]), (2, ["serve", "--bogus"])],
        # ui's 0, a clean stop on SIGTERM, needs a running UI: plugins/codex-ui/tests/test_ui_browser.py
        "ui": [(2, ["ui", "--engine", "no_such_engine", "--state-dir", str(tmp / "ui")]), (2, ["ui", "--bogus"]),
               (2, ["ui", "--server", "http://127.0.0.1:9", "--state-dir", str(tmp / "ui")])],
        "batch": [(0, ["batch", _one_item(tmp), "--out", str(tmp / "batch"), "-q"]),
                  (2, ["batch", str(tmp / "notes.txt")])],
        "grid": [(0, ["grid", "sd15", "txt2img", "--model", "tiny", "--json", json.dumps(SMALL), "--x", "seed=1,2",
                      "--out", str(tmp / "grid"), "-q"]),
                 (2, ["grid", "sd15", "txt2img", "--json", '{"prompt": "x"}', "--x", "seed"])],
        "preprocess": [(0, ["preprocess", "--list"]), (2, ["preprocess", "canny", str(tmp / "notes.txt")])],
        "new-engine": [(0, ["new-engine", "fresh_one", "--dest", str(tmp / "new")]),
                       (2, ["new-engine", "taken", "--dest", str(tmp / "taken")])],
    }


def _one_item(tmp: Path) -> str:
    path = tmp / "one.jsonl"
    path.write_text(json.dumps({"engine": "sd15", "task": "txt2img", "model": "tiny", "request": SMALL}) + "\n")
    return str(path)


def readme_table() -> dict[str, set[int]]:
    """command -> the exit codes README.md's table lists for it."""
    table, inside = {}, False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("| command | 0 | 1 | 2 | 130 |"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            for command in cells[0].replace("`", "").split(" (")[0].split(", "):
                table[command] = {code for code, cell in zip((0, 1, 2, 130), cells[1:]) if cell != "-"}
    return table


def test_the_readme_table_covers_every_command():
    from codex_core.cli import cli

    registry.register_commands(cli)
    assert set(readme_table()) == set(cli.commands)


@pytest.mark.parametrize("command", sorted(readme_table()))
def test_each_command_exits_0_and_2_as_the_table_says(command, a_run, tmp_path):
    cases = _cases(tmp_path, a_run)[command]
    expected = readme_table()[command] & ({2} if command in ("serve", "ui") else {0, 2})
    assert {code for code, _ in cases} == expected
    for code, args in cases:
        result = cli_run(args)
        assert result.exit_code == code, (args, result.stderr)


def test_run_exits_1_when_the_engine_fails(tmp_path, monkeypatch):
    engine = registry.get_engine("sd15")
    monkeypatch.setattr(engine, "run", lambda model, job: (_ for _ in ()).throw(RuntimeError("out of memory")))
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json", json.dumps(SMALL)])
    assert result.exit_code == 1 and "RuntimeError: out of memory" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_replay_check_exits_1_when_the_outputs_differ(a_run, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(a_run["run_dir"], tampered)
    info = json.loads((tampered / "info.json").read_text())
    info["request"]["seed"] += 1
    (tampered / "info.json").write_text(json.dumps(info))
    assert cli_run(["replay", str(tampered), "--check", "-q", "--out", str(tmp_path / "again")]).exit_code == 1


@pytest.mark.slow
def test_run_and_replay_exit_130_when_interrupted(tmp_path):
    long_run = {"prompt": "x", "width": 64, "height": 64, "steps": 400, "seed": 1}
    status, err = interrupted(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path / "a"),
                               "--json", json.dumps(long_run)], b"/400 [", signal.SIGINT)
    assert status == 130, err
    info = {"engine": "sd15", "task": "txt2img", "request": {**long_run, "negative_prompt": "", "cfg": 7.0,
                                                            "batch_size": 1, "mode": "normal"},
            "model": {"kind": "tiny", "label": "tiny"}}
    (tmp_path / "info.json").write_text(json.dumps(info))
    status, err = interrupted(["replay", str(tmp_path / "info.json"), "--out", str(tmp_path / "b")], b"/400 [",
                              signal.SIGTERM)
    assert status == 130, err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_the_1_and_130_codes_of_the_table_are_the_ones_tested_here():
    table = readme_table()
    # batch's and grid's 1 and 130: tests/test_batch.py (a failed or invalid item; resume after an interruption)
    assert {command for command, codes in table.items() if 1 in codes} == {"run", "replay", "batch", "grid"}
    assert {command for command, codes in table.items() if 130 in codes} == {"run", "replay", "batch", "grid"}


def test_serve_on_a_state_dir_whose_database_is_not_one_exits_2(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "jobs.sqlite3").write_bytes(b"these are not the pages of a SQLite database\n" * 100)
    result = cli_run(["serve", "--state-dir", str(state), "--port", str(free_port())])
    assert result.exit_code == 2, result.stderr
    assert f"{state / 'jobs.sqlite3'} cannot be used as the job database (file is not a database)" in result.stderr
    assert "move it aside" in result.stderr


def test_serve_on_a_port_in_use_exits_2_before_touching_the_state_dir(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli_run(["serve", "--state-dir", str(tmp_path / "state"), "--port", str(port)])
    assert result.exit_code == 2, result.stderr
    assert f"--port {port}: 127.0.0.1:{port} is in use by another program" in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_serve_on_a_state_dir_that_cannot_be_made_exits_2():
    result = cli_run(["serve", "--state-dir", "/proc/codex-state", "--port", str(free_port())])
    assert result.exit_code == 2 and "--state-dir /proc/codex-state:" in result.stderr, result.stderr
