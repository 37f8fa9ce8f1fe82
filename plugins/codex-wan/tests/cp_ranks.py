"""One rank of test_context_parallel.py (codex-wan), run under ``torch.distributed.run`` with gloo.

Each rank first computes the single-process output of the tiny VACE and Animate transformers the engines build,
on fixed inputs, then splits the same model with ``enable_parallelism(ContextParallelConfig(ulysses_degree=W),
cp_plan=...)`` (the plugin's plans) and runs the same inputs again; for Animate also with Wan's plan alone (no
face adapter entries). Rank 0 writes the measured differences as JSON to ``argv[1]``.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from codex_diffusers.testing import write_rank_result
from codex_wan.animate_tiny import FACE_SIZE, IMAGE_DIM
from codex_wan.animate_tiny import _transformer as _animate_transformer
from codex_wan.context_parallel import animate_plan, vace_plan
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


def animate_inputs() -> dict:
    """Two samples of 3 latent frames (the reference frame and 2 of the video) of 8 x 8 (48 tokens): 16 tokens a
    frame, so a rank's 24 tokens end in the middle of a frame (what the face adapter must not be fooled by)."""
    generator = torch.Generator().manual_seed(2)
    return dict(hidden_states=torch.randn(2, 36, 3, 8, 8, generator=generator),
                timestep=torch.tensor([700, 300]),
                encoder_hidden_states=torch.randn(2, 12, TEXT_DIM, generator=generator),
                encoder_hidden_states_image=torch.randn(2, 17, IMAGE_DIM, generator=generator),
                pose_hidden_states=torch.randn(2, 16, 2, 8, 8, generator=generator),
                face_pixel_values=torch.rand(2, 3, 5, FACE_SIZE, FACE_SIZE, generator=generator) * 2 - 1,
                return_dict=False)


def animate_case(degree: int) -> dict:
    model = _animate_transformer().eval()
    with torch.no_grad():
        single = model(**animate_inputs())[0]
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=animate_plan())
        seen = {}
        for name in ("blocks.0.ffn", "blocks.1.ffn", "face_adapter.0.to_q"):
            model.get_submodule(name).register_forward_hook(
                lambda module, args, output, name=name: seen.__setitem__(name, args[0].shape[1]))
        split = model(**animate_inputs())[0]
        # Wan's plan alone (no face adapter entries): each rank's face adapter takes its tokens for other frames
        bare_plan = {key: value for key, value in animate_plan().items() if not key.startswith("face_adapter")}
        bare = _animate_transformer().eval()
        bare.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=bare_plan)
        without_face_entries = bare(**animate_inputs())[0]
    return {"tokens_per_rank": seen, "shape": list(split.shape), "maxdiff": maxdiff(split, single),
            "maxdiff_without_face_entries": maxdiff(without_face_entries, single), "scale": float(single.abs().max())}


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    degree = dist.get_world_size()
    result = {"world_size": degree, "vace": vace_case(degree), "animate": animate_case(degree)}
    write_rank_result(result)


if __name__ == "__main__":
    main()
