"""Chroma's cp plan and mask hook (codex_chroma.context_parallel): chroma with ``--parallel ulysses=2``.

The distributed tests start 2 torchrun ranks on the CPU (gloo, the test-only accelerator shim of
``cpu_ranks_env``): cp_ranks.py compares the split tiny ``ChromaTransformer2DModel`` with the single-process run
of the same model on the same inputs (text with padding: 5 and 12 valid tokens of 16), and the CLI test compares
`codex run chroma txt2img ... --parallel ulysses=2 --processes 2` with one process. Measured on CPU: transformer
maxdiff 2.4e-7 (outputs up to 1.6); the bare plan, without the mask order, is off by 3.0e-2; CLI 1 level of 255
(16 without the mask hook).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codex_chroma.context_parallel import plan, prepare_split
from codex_chroma.engines import Chroma
from codex_chroma.tiny import _transformer
from codex_core.testing import cli_run, cpu_ranks_env, on_cpu_ranks, run_json
from codex_diffusers import gathered_order
from codex_diffusers.testing import cp_plan_problems

RANKS = Path(__file__).with_name("cp_ranks.py")
TRANSFORMER_TOLERANCE = 1e-5  # float32 attention over the same keys in another order
PIXEL_TOLERANCE = 2  # levels of 255: the split reorders float sums
REQUEST = {"prompt": "a lighthouse", "seed": 5, "width": 64, "height": 64, "steps": 2}


def test_the_plan_names_parts_of_the_model():
    model = _transformer()
    assert cp_plan_problems(model, plan()) == []
    broken = {"": {**plan()[""], "encoder_attention_mask": plan()[""]["hidden_states"]}}
    assert cp_plan_problems(model, broken) == ["'' has no input 'encoder_attention_mask'"]


def test_the_plan_is_flux_own_and_the_engine_declares_it():
    from diffusers import ChromaTransformer2DModel, FluxTransformer2DModel

    assert ChromaTransformer2DModel._cp_plan is None  # a diffusers that ships one would be used in place of ours
    assert plan() == FluxTransformer2DModel._cp_plan
    declared = Chroma.context_parallel
    assert declared.denoisers == ("transformer",)
    assert declared.plans["transformer"]() == plan()


def test_gathered_order_follows_the_tokens_ulysses_gathers():
    # 2 ranks of 2 text + 3 image tokens: the model's [t0 t1 t2 t3 | i0 .. i5]
    mask = torch.arange(10).view(1, 10)
    assert gathered_order(mask, 2, 3, 2).flatten().tolist() == [0, 1, 4, 5, 6, 2, 3, 7, 8, 9]
    assert gathered_order(mask, 5, 5, 1).flatten().tolist() == list(range(10))


def test_an_unsplit_transformer_is_left_alone():
    model = _transformer()
    assert prepare_split(model) is False
    assert not hasattr(model, "_diffusers_hook")  # no hook registry


@pytest.mark.parametrize("layout", ["ring=2", "ulysses=2,ulysses_anything"])
def test_layouts_the_plan_cannot_split_are_refused_before_loading(tmp_path, layout):
    result = cli_run(["run", "chroma", "txt2img", "--model", "tiny", "--out", str(tmp_path / "out"), "--quiet",
                      "--json", json.dumps(REQUEST), "--parallel", layout, "--processes", "2"])
    assert result.exit_code == 2, result.stderr
    assert "engine chroma: its plan splits with plain Ulysses only" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_ulysses_2_ranks_equal_one_process(tmp_path):
    out = tmp_path / "result.json"
    result = on_cpu_ranks(RANKS, out)
    print(result)
    assert result["world_size"] == 2 and result["shape"] == [2, 64, 4]
    assert result["prepare_split"] == [False, True, True]
    assert result["maxdiff"] <= TRANSFORMER_TOLERANCE, result
    assert result["maxdiff_unmasked"] <= TRANSFORMER_TOLERANCE, result
    # the plan alone (the mask in the model's order) pairs the wrong queries and keys
    assert result["maxdiff_without_mask_order"] > 100 * TRANSFORMER_TOLERANCE, result


@pytest.mark.distributed
def test_cli_on_2_ranks_gives_the_single_process_image(tmp_path):
    single = run_json("chroma", "txt2img", REQUEST, tmp_path / "single", "tiny")
    command = [str(Path(sys.executable).parent / "codex"), "run", "chroma", "txt2img", "--model", "tiny",
               "--json", json.dumps(REQUEST), "--out", str(tmp_path / "ranks"), "--quiet",
               "--parallel", "ulysses=2", "--processes", "2"]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    assert [p.name for p in (tmp_path / "ranks").iterdir()] == [Path(result["run_dir"]).name]  # rank 0 alone wrote
    assert result["info"]["parallel"] == {"ulysses": 2, "ring": 1, "world_size": 2, "split": ["transformer"],
                                          "backend": "gloo"}

    def image(run: dict) -> np.ndarray:
        (path,) = Path(run["run_dir"]).rglob("*.png")
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)

    worst = int(np.abs(image(result) - image(single)).max())
    print(f"max pixel difference against one process: {worst}")
    assert worst <= PIXEL_TOLERANCE, worst


def test_token_counts_the_ranks_cannot_split_are_refused_before_loading(tmp_path):
    # 7 text tokens and 3 x 3 image tokens: diffusers' equal split would fail on the ranks, after loading
    request = {**REQUEST, "width": 48, "height": 48, "max_sequence_length": 7}
    result = cli_run(["run", "chroma", "txt2img", "--model", "tiny", "--out", str(tmp_path / "out"), "--quiet",
                      "--json", json.dumps(request), "--parallel", "ulysses=2", "--processes", "2"])
    assert result.exit_code == 2, result.stderr
    assert "max_sequence_length: 7 text tokens cannot be split evenly across the 2 ranks" in result.stderr
    assert "width, height: 48x48 gives 9 image tokens" in result.stderr
    assert not (tmp_path / "out").exists()
