"""One launch of test_context_parallel.py's transformer check, run under ``torch.distributed.run`` with gloo.

Each rank first computes the single-process result of a tiny LTX transformer on its own (no process group
involved), then splits the same model with ``enable_parallelism(ContextParallelConfig(ulysses_degree=W))`` and
runs the same inputs again: with diffusers' own plan and processors (the error is recorded), then as the engine
runs it (our plan where we have one, then ``prepare_split``). LTX-Video, then LTX-2 (video and audio outputs;
there also diffusers' plan with our processors, whose error is recorded). Rank 0 writes the results as JSON to
``argv[1]``.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from codex_diffusers.testing import write_rank_result
from codex_ltx import ltx2_tiny, tiny
from codex_ltx.context_parallel import ltx2_plan, prepare_split

TEXT_TOKENS = 16
# valid text tokens per batch item: one below half the text (the last rank's text is all padding), one above
VALID = (5, 12)
FRAMES, HEIGHT, WIDTH = 3, 4, 4  # latent sizes: 48 video tokens
AUDIO_FRAMES = 10


def text_mask() -> torch.Tensor:
    mask = torch.zeros(len(VALID), TEXT_TOKENS, dtype=torch.int64)
    for i, valid in enumerate(VALID):
        mask[i, :valid] = 1
    return mask


def ltx_inputs() -> dict:
    generator = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(2, FRAMES * HEIGHT * WIDTH, 8, generator=generator),
                encoder_hidden_states=torch.randn(2, TEXT_TOKENS, tiny.TEXT_DIM, generator=generator),
                timestep=torch.tensor([700.0, 300.0]), encoder_attention_mask=text_mask(),
                num_frames=FRAMES, height=HEIGHT, width=WIDTH, return_dict=False)


def ltx2_inputs() -> dict:
    generator = torch.Generator().manual_seed(1)
    audio_channels = ltx2_tiny.AUDIO_LATENT * ltx2_tiny.MEL_BINS // 4
    return dict(hidden_states=torch.randn(2, FRAMES * HEIGHT * WIDTH, 8, generator=generator),
                audio_hidden_states=torch.randn(2, AUDIO_FRAMES, audio_channels, generator=generator),
                encoder_hidden_states=torch.randn(2, TEXT_TOKENS, ltx2_tiny.TEXT_DIM, generator=generator),
                audio_encoder_hidden_states=torch.randn(2, TEXT_TOKENS, ltx2_tiny.TEXT_DIM, generator=generator),
                timestep=torch.tensor([700.0, 300.0]), encoder_attention_mask=text_mask(),
                audio_encoder_attention_mask=text_mask(), num_frames=FRAMES, height=HEIGHT, width=WIDTH,
                audio_num_frames=AUDIO_FRAMES, fps=24.0, return_dict=False)


MASKS = ("encoder_attention_mask", "audio_encoder_attention_mask")


def maxdiffs(ours, theirs) -> list[float]:
    """The largest difference of each output (LTX-Video: the video; LTX-2: the video and the audio)."""
    return [float((a - b).abs().max()) for a, b in zip(ours, theirs)]


def error_of(model, inputs) -> str | None:
    try:
        model(**inputs)
    except Exception as exc:  # what the split model does without (all of) our changes
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def case(build, inputs, degree: int, plan, outputs: int) -> dict:
    model = build().eval()
    single = model(**inputs())[:outputs]
    unmasked = model(**{**inputs(), **{name: None for name in MASKS if name in inputs()}})[:outputs]
    result = {"scale": [float(x.abs().max()) for x in single], "mask_effect": maxdiffs(unmasked, single),
              "prepare_split_unsplit": prepare_split(model)}
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))
    result["diffusers_error"] = error_of(model, inputs())
    if plan is not None:  # diffusers' plan with our processors
        prepare_split(model)
        result["diffusers_plan_error"] = error_of(model, inputs())
        model = build().eval()
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan())
    result["prepare_split"] = prepare_split(model)
    split = model(**inputs())[:outputs]
    result["maxdiff"] = maxdiffs(split, single)
    result["shapes"] = [list(x.shape) for x in split]
    return result


def main() -> None:
    dist.init_process_group("gloo")
    degree = dist.get_world_size()
    with torch.no_grad():
        result = {"world_size": degree, "ltx_video": case(tiny._transformer, ltx_inputs, degree, None, 1),
                  "ltx2": case(ltx2_tiny._transformer, ltx2_inputs, degree, ltx2_plan, 2)}
    write_rank_result(result)


if __name__ == "__main__":
    main()
