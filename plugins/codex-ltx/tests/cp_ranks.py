"""One rank of test_context_parallel.py, run under ``torch.distributed.run`` with gloo.

Each rank first computes the single-process result of the tiny LTX-Video transformer on its own (no process
group involved), then splits the same model with ``enable_parallelism(ContextParallelConfig(ulysses_degree=W))``
(diffusers' own plan) and runs the same inputs again: first with diffusers' processor (the error it raises is
recorded), then after ``prepare_split`` (our key mask processor). Rank 0 writes the results as JSON to ``argv[1]``.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from codex_ltx.context_parallel import prepare_split
from codex_ltx.tiny import TEXT_DIM, _transformer

TEXT_TOKENS = 16
# valid text tokens per batch item: one below half the text (the last rank's text is all padding), one above
VALID = (5, 12)
FRAMES, HEIGHT, WIDTH = 3, 4, 4  # latent sizes: 48 video tokens


def inputs() -> dict:
    generator = torch.Generator().manual_seed(1)
    batch = len(VALID)
    mask = torch.zeros(batch, TEXT_TOKENS, dtype=torch.int64)
    for i, valid in enumerate(VALID):
        mask[i, :valid] = 1
    return dict(hidden_states=torch.randn(batch, FRAMES * HEIGHT * WIDTH, 8, generator=generator),
                encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
                timestep=torch.tensor([700.0, 300.0]), encoder_attention_mask=mask,
                num_frames=FRAMES, height=HEIGHT, width=WIDTH, return_dict=False)


def maxdiff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def main() -> None:
    dist.init_process_group("gloo")
    degree = dist.get_world_size()
    model = _transformer().eval()
    with torch.no_grad():
        single = model(**inputs())[0]
        # the padding matters: the same inputs without a mask give another result
        unmasked = model(**{**inputs(), "encoder_attention_mask": None})[0]
        unsplit_seen = prepare_split(model)
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))
        try:
            model(**inputs())
            diffusers_error = None
        except Exception as exc:  # what diffusers' own processor does with the split mask
            diffusers_error = f"{type(exc).__name__}: {exc}"
        split_seen = prepare_split(model)
        split = model(**inputs())[0]
    result = {"world_size": degree, "shape": list(split.shape), "maxdiff": maxdiff(split, single),
              "mask_effect": maxdiff(unmasked, single), "scale": float(single.abs().max()),
              "diffusers_error": diffusers_error, "prepare_split": [unsplit_seen, split_seen],
              "processors": sorted({type(block.attn2.processor).__name__ for block in model.transformer_blocks})}
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
