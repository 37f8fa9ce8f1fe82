"""LTX-Video and LTX-2 under ``--parallel ulysses=N`` (codex_ltx.context_parallel): diffusers' cp plans (LTX-2's
with its cross-modal rotary split too) with our key mask attention processors.

The distributed tests start 2 torchrun ranks on the CPU (gloo, the test-only accelerator shim of
``cpu_ranks_env``). cp_ranks.py compares each split tiny transformer with one process on the same inputs (text of
16 tokens with padding: 5 and 12 valid, so the second rank's text of the first item is all padding). diffusers'
own processors raise on the split mask; ours give the single-process output. Measured on CPU: LTX-Video maxdiff
0.0 (outputs up to 2.3; the mask changes them by 0.14, so it is really applied); LTX-2 video 4.8e-7 and audio
2.4e-7 (outputs up to 2.1 and 1.4). The CLI tests run `codex run ENGINE txt2vid ... --parallel ulysses=2
--processes 2` against one process: measured max pixel difference 0 (ltx_video) and 1 (ltx2; its 16-bit sound track 0, and 1 with
another prompt).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LTXVideoTransformer3DModel
from PIL import Image

from codex_core import UsageError
from codex_core.testing import cli_run, cpu_ranks_env, on_cpu_ranks, run_json
from codex_diffusers.testing import cp_plan_problems
from codex_ltx import ltx2_tiny
from codex_ltx.context_parallel import (key_mask_processor_class, ltx2_plan, prepare_split, split_tokens_problem,
                                        use_key_mask)
from codex_ltx.engines import LTXVideo
from codex_ltx.ltx2 import LTX2
from codex_ltx.tiny import TEXT_DIM, _transformer

RANKS = Path(__file__).with_name("cp_ranks.py")
TRANSFORMER_TOLERANCE = 1e-5  # float32 attention over the same keys, its heads on two ranks
PIXEL_TOLERANCE = 2  # levels of 255, as tests/test_context_parallel.py (measured here: 0 ltx_video, 1 ltx2)
AUDIO_TOLERANCE = 8  # levels of 32767 in ltx2's 16-bit sound track (measured here: 0, at a peak of 7235)
REQUEST = {"prompt": "a cat walks on the grass", "seed": 3, "width": 32, "height": 32, "num_frames": 9, "steps": 2}
LTX2_REQUEST = {"prompt": "a man plays a red guitar", "seed": 3, "width": 64, "height": 64, "num_frames": 9,
                "steps": 2, "max_sequence_length": 128}


@pytest.fixture(scope="module")
def model():
    return _transformer().eval()


def test_the_engine_declares_diffusers_plan_which_names_parts_of_the_model(model):
    declared = LTXVideo.context_parallel
    assert declared.denoisers == ("transformer",) and not declared.plans  # diffusers' _cp_plan is used
    assert cp_plan_problems(model, LTXVideoTransformer3DModel._cp_plan) == []
    # the text mask is split with the text: what the key mask processor relies on
    assert "encoder_attention_mask" in LTXVideoTransformer3DModel._cp_plan[""]


def test_ltx2_declares_diffusers_plan_with_the_cross_modal_rotary_split():
    from diffusers import LTX2VideoTransformer3DModel

    declared = LTX2.context_parallel
    assert declared.denoisers == ("transformer",) and declared.plans["transformer"]() == ltx2_plan()
    plan = ltx2_plan()
    assert {key: plan[key] for key in LTX2VideoTransformer3DModel._cp_plan} == LTX2VideoTransformer3DModel._cp_plan
    assert set(plan) - set(LTX2VideoTransformer3DModel._cp_plan) == {"cross_attn_rope"}
    assert cp_plan_problems(ltx2_tiny._transformer(), plan) == []


def padded_inputs() -> dict:
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 16, dtype=torch.int64)
    mask[0, :5], mask[1, :12] = 1, 1
    return dict(hidden_states=torch.randn(2, 48, 8, generator=generator),
                encoder_hidden_states=torch.randn(2, 16, TEXT_DIM, generator=generator),
                timestep=torch.tensor([700.0, 300.0]), encoder_attention_mask=mask, num_frames=3, height=4, width=4,
                return_dict=False)


def test_the_key_mask_processor_is_diffusers_attention_unsplit():
    model = _transformer().eval()
    with torch.no_grad():
        theirs = model(**padded_inputs())[0]
        assert use_key_mask(model) == 2 and use_key_mask(model) == 2  # one attn2 per block; again: no-op
        ours = model(**padded_inputs())[0]
    assert {type(block.attn2.processor).__name__ for block in model.transformer_blocks} == {"KeyMaskAttnProcessor"}
    assert {type(block.attn1.processor).__name__ for block in model.transformer_blocks} == {"LTXVideoAttnProcessor"}
    assert float((ours - theirs).abs().max()) <= 1e-6


def test_the_ltx2_key_mask_processor_is_diffusers_attention_unsplit():
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from cp_ranks import ltx2_inputs

    model = ltx2_tiny._transformer().eval()
    with torch.no_grad():
        theirs = model(**ltx2_inputs())[:2]
        assert use_key_mask(model) == 4  # attn2 and audio_attn2 of 2 blocks
        ours = model(**ltx2_inputs())[:2]
    assert {type(block.audio_attn2.processor).__name__ for block in model.transformer_blocks} == {
        "LTX2KeyMaskAttnProcessor"}
    assert max(float((a - b).abs().max()) for a, b in zip(ours, theirs)) <= 1e-6


def test_an_unsplit_transformer_is_left_alone(model):
    assert prepare_split(model) is False
    assert {type(block.attn2.processor).__name__ for block in model.transformer_blocks} == {"LTXVideoAttnProcessor"}


def test_another_processor_is_not_replaced():
    from diffusers.models.attention_processor import AttnProcessor2_0

    model = _transformer()
    model.transformer_blocks[0].attn2.set_processor(AttnProcessor2_0())
    with pytest.raises(UsageError, match="AttnProcessor2_0"):
        use_key_mask(model)
    assert key_mask_processor_class().__name__ == "KeyMaskAttnProcessor"


def test_a_split_ltx2_with_split_rotary_embeddings_is_refused():
    from diffusers import ContextParallelConfig, LTX2VideoTransformer3DModel
    from diffusers.models._modeling_parallel import ParallelConfig

    model = LTX2VideoTransformer3DModel.from_config(ltx2_tiny._transformer().config, rope_type="split")
    # the configs enable_parallelism sets on each processor, set by hand: the refusal needs no process group
    for block in model.transformer_blocks:
        block.attn2.processor._parallel_config = ParallelConfig(ContextParallelConfig(ulysses_degree=2))
    with pytest.raises(UsageError, match="rope_type 'split'"):
        prepare_split(model)


def test_split_tokens_problem():
    assert split_tokens_problem(2, 1, 1, 128, 2) is None
    assert "3 tokens (3 latent frames x 1 x 1)" in split_tokens_problem(3, 1, 1, 128, 2)
    assert "the text is 128 tokens" in split_tokens_problem(3, 2, 2, 128, 3)


# -- refused before anything loads -------------------------------------------------------------------------------

def refused(engine: str, request: dict, *extra: str, out: Path) -> str:
    result = cli_run(["run", engine, "txt2vid", "--model", "tiny", "--json", json.dumps(request), *extra,
                      "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    return result.stderr


@pytest.mark.parametrize("engine, request_", [("ltx_video", REQUEST), ("ltx2", LTX2_REQUEST)])
@pytest.mark.parametrize("layout, ranks", [("ring=2", "2"), ("ulysses=2,ring=2", "4"),
                                           ("ulysses=2,ulysses_anything", "2")])
def test_what_is_not_plain_ulysses_is_refused(tmp_path, engine, request_, layout, ranks):
    stderr = refused(engine, request_, "--parallel", layout, "--processes", ranks, out=tmp_path / "out")
    assert f"engine {engine}" in stderr and "plain Ulysses only" in stderr


def test_heads_that_do_not_divide_are_refused(tmp_path):
    # the tiny LTX-Video transformer has 4 heads
    stderr = refused("ltx_video", REQUEST, "--parallel", "ulysses=3", "--processes", "3", out=tmp_path / "out")
    assert "has 4 attention heads" in stderr


def test_a_video_that_does_not_split_evenly_is_refused(tmp_path):
    # 17 frames at 32x32: 3 latent frames of 1x1 tokens
    stderr = refused("ltx_video", {**REQUEST, "num_frames": 17}, "--parallel", "ulysses=2", "--processes", "2",
                     out=tmp_path / "out")
    assert "num_frames: --parallel ulysses=2: the video is 3 tokens" in stderr


# -- 2 ranks on the CPU against one process ----------------------------------------------------------------------

@pytest.mark.distributed
def test_ulysses_2_ranks_give_the_single_process_transformer_outputs(tmp_path):
    out = tmp_path / "result.json"
    result = on_cpu_ranks(RANKS, out)
    assert result["world_size"] == 2
    ltx, ltx2 = result["ltx_video"], result["ltx2"]
    assert ltx["shapes"] == [[2, 48, 8]] and ltx2["shapes"] == [[2, 48, 8], [2, 10, 8]]  # video (and audio)
    # diffusers' own processors: the mask keeps every head, the scores only this rank's share of them
    assert "must match the size of tensor b (4)" in ltx["diffusers_error"]
    assert "doesn't match the broadcast shape" in ltx2["diffusers_error"]
    # LTX-2 with diffusers' plan and our processors: the video's cross-modal rotary embedding is left whole
    assert "size of tensor a (24) must match the size of tensor b (48)" in ltx2["diffusers_plan_error"]
    for name, case in (("ltx_video", ltx), ("ltx2", ltx2)):
        assert case["prepare_split_unsplit"] is False and case["prepare_split"] is True
        assert min(case["mask_effect"]) > 100 * TRANSFORMER_TOLERANCE, case  # the padding changes every output
        print(f"{name} transformer maxdiff against one process: {case['maxdiff']}")
        assert max(case["maxdiff"]) <= TRANSFORMER_TOLERANCE, case


def pixels(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path).convert("RGB"), dtype=np.int16) for path in sorted(folder.rglob("*.png"))]


def samples(path: Path) -> np.ndarray:
    import wave

    with wave.open(str(path)) as audio:
        assert audio.getsampwidth() == 2
        return np.frombuffer(audio.readframes(audio.getnframes()), dtype=np.int16).astype(np.int32)


@pytest.mark.distributed
@pytest.mark.parametrize("engine, request_", [("ltx_video", REQUEST), ("ltx2", LTX2_REQUEST)])
def test_txt2vid_on_2_ranks_gives_the_single_process_frames(tmp_path, engine, request_):
    single = run_json(engine, "txt2vid", request_, tmp_path / "single", "tiny", "--format", "frames")
    out = tmp_path / "ranks"
    command = [str(Path(sys.executable).parent / "codex"), "run", engine, "txt2vid", "--model", "tiny", "--json",
               json.dumps(request_), "--format", "frames", "--out", str(out), "--quiet", "--parallel", "ulysses=2",
               "--processes", "2"]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON document: rank 1 prints nothing
    folders = list(out.iterdir())
    assert folders == [Path(result["run_dir"])], folders  # rank 0 alone wrote
    assert result["info"]["parallel"] == {"ulysses": 2, "ring": 1, "world_size": 2, "split": ["transformer"],
                                          "backend": "gloo"}
    ours, theirs = pixels(folders[0]), pixels(Path(single["run_dir"]))
    assert len(ours) == len(theirs) == request_["num_frames"]
    worst = max(int(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    print(f"{engine}: max pixel difference against one process: {worst}")
    assert worst <= PIXEL_TOLERANCE, worst
    if engine == "ltx2":  # the sound track too, in 16-bit levels
        a, b = samples(folders[0] / "audio.wav"), samples(Path(single["run_dir"]) / "audio.wav")
        assert a.shape == b.shape and a.size > 0
        print(f"ltx2: max audio sample difference: {int(np.abs(a - b).max())} (peak {int(np.abs(b).max())})")
        assert int(np.abs(a - b).max()) <= AUDIO_TOLERANCE
