"""One rank of test_context_parallel.py (codex-wan), run under ``torch.distributed.run`` with gloo.

Each rank first computes the single-process output of the tiny VACE transformer the engine builds, on fixed
inputs, then splits the same model with ``enable_parallelism(ContextParallelConfig(ulysses_degree=W),
cp_plan=vace_plan())`` and runs the same inputs again. Rank 0 writes the measured difference as JSON to
``argv[1]``.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from codex_wan.context_parallel import vace_plan
from codex_wan.tiny import TEXT_DIM
from codex_wan.vace_tiny import VACE_IN_CHANNELS, _vace_transformer


def maxdiff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def vace_inputs(control_frames: int) -> dict:
    """Two samples of 3 latent frames of 8 x 8 (48 tokens); the control latents may cover fewer frames (the
    model pads their tokens with zeros)."""
    generator = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(2, 16, 3, 8, 8, generator=generator),
                timestep=torch.tensor([700, 300]),
                encoder_hidden_states=torch.randn(2, 12, TEXT_DIM, generator=generator),
                control_hidden_states=torch.randn(2, VACE_IN_CHANNELS, control_frames, 8, 8, generator=generator),
                control_hidden_states_scale=torch.tensor([1.0, 0.5]), return_dict=False)


def vace_case(degree: int) -> dict:
    model = _vace_transformer().eval()
    cases = {"full_control": 3, "short_control": 2}
    with torch.no_grad():
        single = {name: model(**vace_inputs(frames))[0] for name, frames in cases.items()}
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=vace_plan())
        # the tokens each block's feed-forward sees on this rank: the proof that the blocks ran split
        seen = {}
        for name in ("vace_blocks.0", "vace_blocks.1", "blocks.0", "blocks.1"):
            model.get_submodule(f"{name}.ffn").register_forward_hook(
                lambda module, args, output, name=name: seen.__setitem__(name, args[0].shape[1]))
        split = {name: model(**vace_inputs(frames))[0] for name, frames in cases.items()}
    return {"tokens_per_rank": seen,
            **{name: {"shape": list(split[name].shape), "maxdiff": maxdiff(split[name], single[name]),
                      "scale": float(single[name].abs().max())} for name in cases}}


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    degree = dist.get_world_size()
    result = {"world_size": degree, "vace": vace_case(degree)}
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
