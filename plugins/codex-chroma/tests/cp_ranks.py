"""One rank of test_context_parallel.py (codex-chroma), run under ``torch.distributed.run`` with gloo.

Each rank first computes the single-process output of the tiny ``ChromaTransformer2DModel`` the engine builds, on
fixed inputs with a padded text (a mask as ChromaPipeline makes it), then splits the same model with
``enable_parallelism(ContextParallelConfig(ulysses_degree=W), cp_plan=plan())`` and runs the same inputs again:
the bare plan (the mask in the model's order), then after ``prepare_split`` (the mask hook). Rank 0 writes the
measured differences as JSON to ``argv[1]``.
"""

from __future__ import annotations


import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig

from codex_chroma.context_parallel import plan, prepare_split
from codex_chroma.tiny import TEXT_DIM, _transformer
from codex_diffusers.testing import write_rank_result

TEXT_TOKENS = 16
IMAGE_TOKENS = 64  # an 8 x 8 packed latent
# valid text tokens per batch item (the pipeline keeps one padding token unmasked: seq_len + 1): one below half
# the text (the second rank's text is all padding), one above
VALID = (5, 12)


def inputs() -> dict:
    generator = torch.Generator().manual_seed(1)
    batch = len(VALID)
    text_mask = torch.zeros(batch, TEXT_TOKENS)
    for i, valid in enumerate(VALID):
        text_mask[i, :valid] = 1
    # ChromaPipeline._prepare_attention_mask: the text mask, then ones for every image token
    mask = torch.cat([text_mask, torch.ones(batch, IMAGE_TOKENS)], dim=1)
    ids = torch.zeros(IMAGE_TOKENS, 3)
    ids[:, 1] = torch.arange(IMAGE_TOKENS) // 8
    ids[:, 2] = torch.arange(IMAGE_TOKENS) % 8
    return dict(hidden_states=torch.randn(batch, IMAGE_TOKENS, 4, generator=generator),
                encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=generator),
                timestep=torch.tensor([0.7, 0.3]), img_ids=ids, txt_ids=torch.zeros(TEXT_TOKENS, 3),
                attention_mask=mask, return_dict=False)


def maxdiff(a, b) -> float:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


def main() -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    degree = dist.get_world_size()
    model = _transformer().eval()
    with torch.no_grad():
        single = model(**inputs())[0]
        unsplit = prepare_split(model)  # what the engine's prepare_view does before each run
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan())
        bare = model(**inputs())[0]
        split_seen = prepare_split(model)
        split = model(**inputs())[0]
        again = prepare_split(model)  # a second run's call adds nothing
        unmasked = {key: value for key, value in inputs().items() if key != "attention_mask"}
        split_unmasked = model(**unmasked)[0]
    fresh = _transformer().eval()
    with torch.no_grad():
        single_unmasked = fresh(**unmasked)[0]
    result = {"world_size": degree, "shape": list(split.shape), "maxdiff": maxdiff(split, single),
              "maxdiff_without_mask_order": maxdiff(bare, single), "prepare_split": [unsplit, split_seen, again],
              "maxdiff_unmasked": maxdiff(split_unmasked, single_unmasked), "scale": float(single.abs().max())}
    write_rank_result(result)


if __name__ == "__main__":
    main()
