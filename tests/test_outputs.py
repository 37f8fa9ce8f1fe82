"""Nothing half-written: failures and interrupts leave no partial run folder."""

import json

import pytest

from codex_core import registry
from codex_core.outputs import run_folder
from codex_core.testing import cli_run

REQUEST = json.dumps({"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1})


def test_run_folder_appears_only_when_complete(tmp_path):
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path, "run-1") as folder:
            (folder.staging_dir / "0000.png").write_bytes(b"partial")
            assert not folder.final_dir.exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with run_folder(tmp_path, "run-2") as folder:
        (folder.staging_dir / "0000.png").write_bytes(b"done")
    assert [p.name for p in tmp_path.iterdir()] == ["run-2"]


def test_interrupt_during_denoising_exits_130_and_keeps_nothing(tmp_path, monkeypatch):
    engine = registry.get_engine("sd15")

    def interrupted(model, job):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run", interrupted)
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json", REQUEST])
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_failure_while_exporting_leaves_no_files(tmp_path, monkeypatch):
    png = registry.exporters()["png"]

    def half_written(output, files, info):
        (files.staging_dir / "0000.png").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setitem(registry.exporters(), "png", type(png)("png", "image", half_written))
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json", REQUEST])
    assert result.exit_code == 1
    assert "OSError: disk full" in result.stderr
    assert list(tmp_path.iterdir()) == []
