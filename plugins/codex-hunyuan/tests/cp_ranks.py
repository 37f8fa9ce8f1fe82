"""One rank of test_context_parallel.py, run under ``torch.distributed.run`` with gloo.

Each rank first computes the single-process result on its own (no process group involved), then splits the
same model with ``enable_parallelism(ContextParallelConfig(ulysses_degree=W), cp_plan=plan())`` and runs the
same inputs again: the bare plan (the model's joint mask in the wrong order), then with ``reorder_joint_mask``.
Rank 0 writes the measured differences as JSON to ``argv[1]``; with ``argv[2]`` (a tiny pipeline folder) it
does the same through ``HunyuanVideoPipeline``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig, HunyuanVideoPipeline

from codex_core import UsageError
from codex_diffusers.testing import write_rank_result
from codex_hunyuan.context_parallel import plan, prepare_split, reorder_joint_mask
from codex_hunyuan.tiny import LATENT_CHANNELS, POOLED_DIM, TEXT_DIM, T2V_CALL, _transformer

TEXT_TOKENS = 64  # the tiny pipeline's max_sequence_length
# valid text tokens per batch item: one below half the text (the last rank's text is all padding), one above
VALID = (23, 50)


def inputs(channels: int = LATENT_CHANNELS) -> dict:
    generator = torch.Generator().manual_seed(1)
    batch = len(VALID)
    mask = torch.zeros(batch, TEXT_TOKENS, dtype=torch.int64)
    for i, valid in enumerate(VALID):
        mask[i, :valid] = 1
    return dict(hidden_states=torch.randn(batch, channels, 3, 8, 8, generator=generator),  # 192 tokens
                timestep=torch.tensor([700.0, 300.0]),
                encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
                encoder_attention_mask=mask,
                pooled_projections=torch.randn(batch, POOLED_DIM, generator=generator),
                guidance=torch.tensor([6000.0, 6000.0]), return_dict=False)


def maxdiff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


# the tiny transformers the engine builds: text-to-video, and image-to-video with latent_concat (9 channels in)
TRANSFORMERS = {"t2v": (LATENT_CHANNELS, True, None), "i2v_latent_concat": (2 * LATENT_CHANNELS + 1, False, "latent_concat")}


def transformer_case(degree: int, channels: int, guidance: bool, condition: str | None) -> dict:
    model = _transformer(channels, guidance_embeds=guidance, image_condition_type=condition).eval()
    with torch.no_grad():
        single = model(**inputs(channels))[0]
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan())
        bare = model(**inputs(channels))[0]
        hooked = reorder_joint_mask(model)
        split = model(**inputs(channels))[0]
    return {"shape": list(split.shape), "maxdiff": maxdiff(split, single), "maxdiff_without_mask_order": maxdiff(
        bare, single), "hooked_attentions": hooked, "scale": float(single.abs().max())}


def pipeline_case(folder: str, degree: int) -> dict:
    pipe = HunyuanVideoPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)

    def call():
        # 6 of the 64 text tokens valid: the second rank's text is all padding, so the mask order matters
        return pipe(prompt="a cat", height=32, width=32, num_frames=9,
                    num_inference_steps=2, guidance_scale=6.0, output_type="np",
                    generator=torch.Generator().manual_seed(0), **T2V_CALL).frames[0]

    single = call()
    unsplit = prepare_split(pipe.transformer)  # what the engine's prepare_view does before each run
    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan())
    split_seen = prepare_split(pipe.transformer)
    split = call()
    return {"shape": list(split.shape), "maxdiff": maxdiff(split, single), "prepare_split": [unsplit, split_seen]}


def token_replace_case(degree: int) -> str:
    """The engine's refusal of a split token_replace transformer (HunyuanVideo-I2V)."""
    model = _transformer(LATENT_CHANNELS, guidance_embeds=True, image_condition_type="token_replace")
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan())
    try:
        prepare_split(model)
    except UsageError as exc:
        return str(exc)
    return "not refused"


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    degree = dist.get_world_size()
    result = {"world_size": degree, "token_replace": token_replace_case(degree),
              **{name: transformer_case(degree, *args) for name, args in TRANSFORMERS.items()}}
    if len(sys.argv) > 2:
        result["pipeline"] = pipeline_case(sys.argv[2], degree)
    write_rank_result(result)


if __name__ == "__main__":
    main()
