"""The request model of __NAME__ txt2img. Only pydantic here: `codex schema` must not import torch.

STARTING POINT: the template's PixArt-Sigma stride; your pipeline's (VAE factor x patch size) goes in size_multiple,
your family's own request fields here (the conformance suite checks that each reaches the pipeline)."""

from __future__ import annotations

from codex_core import Txt2ImgParams


class __CLASS__Txt2Img(Txt2ImgParams):
    # The VAE downsamples by 8 and the transformer patches latents 2x2: sizes are multiples of 16
    # (PixArtSigmaPipeline checks only 8 and then fails inside the transformer).
    size_multiple = 16


TASKS = {"txt2img": __CLASS__Txt2Img}
