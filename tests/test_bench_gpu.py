"""bench/gpu.py's dry run: the GPU bench's code path on the CPU at tiny size, as CI runs it (no GPU needed)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ("none", "cache first_block", "weights fp8", "offload model", "offload group", "offload auto",
           "compile regional", "parallel 2", "parallel 4", "parallel 8")
ENGINES = ("wan_ti2v_5b", "flux", "ltx2", "hunyuan_video_15")
NO_CACHE = ("ltx2", "hunyuan_video_15")  # engines without a first_block step cache: that option is n/a


def test_dry_run_prints_a_table_with_a_row_per_engine_and_option(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = lines.index("| model, request | option | s/step (steady) | vs none | first step | denoising | whole run "
                         "| peak VRAM |")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[header + 2:] if line.startswith("|")]
    assert [(row[0].split()[0], row[1]) for row in rows] == [(engine, option) for engine in ENGINES
                                                            for option in OPTIONS]
    for row in rows:
        assert not row[2].startswith("failed"), row
        if row[1] in ("offload model", "offload group"):
            assert row[2] == "n/a on the CPU (needs a GPU)"
        elif row[1] == "cache first_block" and row[0].split()[0] in NO_CACHE:
            assert row[2] == f"n/a: {row[0].split()[0]} has no first_block cache"
        elif row[1] in ("parallel 4", "parallel 8"):  # 2 CPU ranks run (below); the tiny models have 2 heads
            assert row[2] == "n/a in the dry run (the tiny models' 2 heads split 2 ways)" or "no context-parallel" in row[2]
        elif row[1] == "parallel 2" and "no context-parallel plan" in row[2]:
            assert row[0].split()[0] not in ("wan_ti2v_5b", "flux"), row  # these declare one
        else:  # offload auto runs: on the CPU its plan keeps everything in place  # measured: the steady step time, the ratio to no option, the stage times
            assert re.fullmatch(r"\d+\.\d{3} s", row[2]) and re.fullmatch(r"\d+\.\d{2}", row[3]), row
            assert row[0].endswith("2 steps") and row[7] == "-"  # no VRAM on the CPU
    assert not list(tmp_path.glob("codex-bench-gpu-*"))  # the random-weight folders are removed
