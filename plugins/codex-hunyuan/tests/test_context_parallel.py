"""HunyuanVideo's cp plan and joint-mask hook (codex_hunyuan.context_parallel).

The distributed test runs cp_ranks.py on 2 torchrun ranks (gloo, CPU, the test-only accelerator shim of
``cpu_ranks_env``) and compares each split run with the single-process run of the same model on the same
inputs: the tiny transformers (text with padding: 23 and 50 valid tokens of 64) and the tiny
``HunyuanVideoPipeline``. Measured on CPU: transformer maxdiff 2.4e-7 (outputs up to 1.7), pipeline frames
maxdiff 2.0e-6 (in 0..1); the bare plan, without the mask order, is off by 6.4e-3 and 8.8e-3. (Measured once
by hand, not run here: 4 ranks on a 4-head, 2+2-block build of the same transformer, maxdiff 4.8e-7; bare
plan 4.2e-2.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codex_core import UsageError
from codex_core.testing import cpu_ranks_env, on_cpu_ranks, tiny_model_dir
from codex_diffusers import gathered_order
from codex_diffusers.testing import cp_plan_problems
from codex_hunyuan.context_parallel import check_transformer, plan, prepare_split
from codex_hunyuan.engines import HunyuanVideo
from codex_hunyuan.tiny import LATENT_CHANNELS, _transformer

RANKS = Path(__file__).with_name("cp_ranks.py")
TRANSFORMER_TOLERANCE = 1e-5  # float32 attention over the same keys in another order
FRAMES_TOLERANCE = 1e-4  # frames in 0..1, after 2 steps and the VAE


@pytest.fixture(scope="module")
def transformers():
    return {"t2v": _transformer(LATENT_CHANNELS, guidance_embeds=True, image_condition_type=None),
            "i2v_latent_concat": _transformer(2 * LATENT_CHANNELS + 1, guidance_embeds=False,
                                              image_condition_type="latent_concat")}


def test_the_plan_names_parts_of_the_model(transformers):
    for model in transformers.values():
        assert cp_plan_problems(model, plan()) == []


def test_the_check_catches_a_plan_naming_what_the_model_lacks(transformers):
    model = transformers["t2v"]
    broken = {**plan(), "blocks.0": plan()["transformer_blocks.0"],  # Wan's name for the blocks
              "transformer_blocks.0": {"hidden_states": plan()["transformer_blocks.0"]["hidden_states"],
                                       "encoder_attention_mask": plan()["transformer_blocks.0"]["hidden_states"]}}
    problems = cp_plan_problems(model, broken)
    assert len(problems) == 2
    assert any("'blocks'" in problem for problem in problems)
    assert any("no input 'encoder_attention_mask'" in problem for problem in problems)


def test_the_engine_declares_the_plan():
    declared = HunyuanVideo.context_parallel
    assert declared.denoisers == ("transformer",)
    assert declared.plans["transformer"]() == plan()
    assert declared.heads_key == "num_attention_heads"


def test_diffusers_ships_no_plan_for_either_hunyuan_video():
    # a diffusers that ships one would be used in place of ours (and 1.5 might then split): revisit both
    from diffusers import HunyuanVideo15Transformer3DModel, HunyuanVideoTransformer3DModel

    from codex_hunyuan.v15 import HunyuanVideo15

    assert HunyuanVideoTransformer3DModel._cp_plan is None
    assert HunyuanVideo15Transformer3DModel._cp_plan is None
    assert HunyuanVideo15.context_parallel is None  # refuses --parallel (see context_parallel.py)


def test_gathered_order_follows_the_keys_ulysses_gathers():
    # 2 ranks of 3 video + 2 text tokens: the model's [v0 v1 v2 v3 v4 v5 | t0 t1 t2 t3]
    mask = torch.arange(10).view(1, 1, 1, 10)
    assert gathered_order(mask, 3, 2, 2).flatten().tolist() == [0, 1, 2, 6, 7, 3, 4, 5, 8, 9]
    assert gathered_order(mask, 5, 5, 1).flatten().tolist() == list(range(10))
    # 3 ranks of 2 video + 1 text token: [v0 .. v5 | t0 t1 t2] -> [v0 v1 t0, v2 v3 t1, v4 v5 t2]
    mask = torch.arange(9).view(1, 1, 1, 9)
    assert gathered_order(mask, 2, 1, 3).flatten().tolist() == [0, 1, 6, 2, 3, 7, 4, 5, 8]


def test_an_unsplit_transformer_is_left_alone(transformers):
    # the single-process path: the engine's prepare_view adds nothing
    model = transformers["t2v"]
    assert prepare_split(model) is False
    attentions = [block.attn for block in [*model.transformer_blocks, *model.single_transformer_blocks]]
    assert len(attentions) == 2 and all(not hasattr(a, "_diffusers_hook") for a in attentions)  # no hook registry


def test_token_replace_is_refused():
    config = _transformer(LATENT_CHANNELS, guidance_embeds=True, image_condition_type="token_replace").config
    with pytest.raises(UsageError, match="token_replace"):
        check_transformer(config)
    check_transformer(_transformer(LATENT_CHANNELS, guidance_embeds=True, image_condition_type=None).config)


@pytest.mark.distributed
def test_ulysses_2_ranks_equal_one_process(tmp_path):
    out = tmp_path / "result.json"
    result = on_cpu_ranks(RANKS, out, str(tiny_model_dir("hunyuan_video")))
    assert result["world_size"] == 2
    for name in ("t2v", "i2v_latent_concat"):
        case = result[name]
        assert case["shape"] == [2, LATENT_CHANNELS, 3, 8, 8]
        assert case["hooked_attentions"] == 2  # one double-stream and one single-stream block
        assert case["maxdiff"] <= TRANSFORMER_TOLERANCE, case
        # the plan alone (the joint mask in the model's order) attends to the wrong keys
        assert case["maxdiff_without_mask_order"] > 100 * TRANSFORMER_TOLERANCE, case
    pipeline = result["pipeline"]
    assert pipeline["shape"] == [9, 32, 32, 3]
    assert pipeline["prepare_split"] == [False, True]
    assert pipeline["maxdiff"] <= FRAMES_TOLERANCE, pipeline
    assert "token_replace" in result["token_replace"] and "not refused" not in result["token_replace"]


# -- through the CLI: `codex run hunyuan_video ... --parallel ulysses=2 --processes 2` -------------------------

CLI_REQUEST = {"prompt": "a cat walks on the grass", "seed": 3, "width": 32, "height": 32, "num_frames": 5,
               "steps": 2}
PIXEL_TOLERANCE = 2  # levels of 255: the split reorders float sums (measured here: 1)


@pytest.mark.parametrize("layout", ["ring=2", "ulysses=2,ring=2", "ulysses=2,ulysses_anything"])
def test_layouts_the_plan_cannot_split_are_refused_before_loading(tmp_path, layout):
    from codex_core.testing import cli_run

    ranks = str(2 if layout != "ulysses=2,ring=2" else 4)
    result = cli_run(["run", "hunyuan_video", "txt2vid", "--model", "tiny", "--out", str(tmp_path / "out"),
                      "--quiet", "--json", json.dumps(CLI_REQUEST), "--parallel", layout, "--processes", ranks])
    assert result.exit_code == 2, result.stderr
    assert "engine hunyuan_video: its plan splits with plain Ulysses only" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_cli_on_2_ranks_gives_the_single_process_frames(tmp_path):
    import numpy as np
    from PIL import Image

    from codex_core.testing import run_json

    single = run_json("hunyuan_video", "txt2vid", CLI_REQUEST, tmp_path / "single", "tiny", "--format", "frames")
    command = [str(Path(sys.executable).parent / "codex"), "run", "hunyuan_video", "txt2vid", "--model", "tiny",
               "--json", json.dumps(CLI_REQUEST), "--out", str(tmp_path / "ranks"), "--quiet", "--format", "frames",
               "--parallel", "ulysses=2", "--processes", "2"]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    assert [p.name for p in (tmp_path / "ranks").iterdir()] == [Path(result["run_dir"]).name]
    assert result["info"]["parallel"]["split"] == ["transformer"]

    def frames(folder) -> list:
        return [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in sorted(Path(folder).rglob("*.png"))]

    ours, theirs = frames(result["run_dir"]), frames(single["run_dir"])
    assert len(ours) == len(theirs) == CLI_REQUEST["num_frames"]
    worst = max(int(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    print(f"max pixel difference against one process: {worst}")
    assert worst <= PIXEL_TOLERANCE, worst
