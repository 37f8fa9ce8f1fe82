"""Nothing half-written: failures and interrupts leave no partial run folder."""

import json
import signal

import pytest

from codex_core import registry
from codex_core.outputs import run_folder
from codex_core.testing import cli_run, interrupted

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


# long enough to be interrupted in the middle: 400 tiny denoising steps; a 65-frame WebM takes seconds to encode
DENOISING = ["run", "sd15", "txt2img", "--model", "tiny", "--json",
             json.dumps({"prompt": "x", "width": 64, "height": 64, "steps": 400, "seed": 1})]
EXPORTING = ["run", "ltx_video", "txt2vid", "--model", "tiny", "--format", "webm", "--json",
             json.dumps({"prompt": "x", "width": 128, "height": 128, "num_frames": 65, "steps": 2, "seed": 1})]


@pytest.mark.slow
@pytest.mark.parametrize("args, marker", [(DENOISING, b"/400 ["), (EXPORTING, b"codex: writing webm")],
                         ids=["mid-denoise", "mid-export"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_real_interrupt_exits_130_and_keeps_nothing(tmp_path, args, marker, sig):
    out = tmp_path / "out"
    status, err = interrupted(args + ["--out", str(out)], marker, sig)
    assert status == 130, err
    assert "interrupted; no partial output was kept" in err
    assert not out.exists() or list(out.iterdir()) == [], err  # no run folder, no staging folder


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
