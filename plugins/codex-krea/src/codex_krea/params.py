"""Request model for krea2. Only pydantic here: `codex schema` must not import torch.

What diffusers' Krea2Pipeline does with each field (diffusers 0.42, read from its __call__):

- Sizes are multiples of 16: the Qwen-Image VAE downsamples by 8 and the pipeline packs latents in
  2x2 patches (``patch_size``). The pipeline would round other sizes up with a log line; we reject them.
- ``cfg`` is diffusers' ``guidance_scale`` in the Krea 2 convention: the velocity is
  ``cond + cfg x (cond - uncond)``, real classifier-free guidance against the negative prompt
  whenever cfg is above 0 (the usual CFG scale is 1 + cfg). At 0 (the Turbo checkpoint) the
  negative prompt is never encoded, so a negative prompt then is an error here.
- ``max_sequence_length`` is the fixed text block the transformer sees: the prompt is padded or cut to
  it, and its last 5 tokens are the chat template's assistant suffix, so the prompt keeps
  ``max_sequence_length - 5`` tokens (info.notes.truncated counts that window).
- No ``flow_shift`` field: the shift is the pipeline's own ``mu`` (fixed 1.15 for the distilled
  checkpoint, from the image size for the base one), passed to the scheduler on every call.
- No ``cache`` field: Krea2Transformer2DModel has no diffusers cache hooks (CacheMixin).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import Params, Txt2ImgParams
from codex_diffusers import LoraFields

TEMPLATE_SUFFIX_TOKENS = 5  # "<|im_end|>\n<|im_start|>assistant\n": Krea2Pipeline.prompt_template_encode_num_suffix_tokens
MAX_SEQUENCE_LENGTH = 512  # Krea2Pipeline's default text block, the layout the model was sampled with


class _Krea2Fields(Params, LoraFields):
    negative_prompt: str = Field("", description="What to steer away from (used when cfg is above 0: real "
                                                 "classifier-free guidance).")
    cfg: float = Field(ge=0.0, le=50.0, description="Krea 2 guidance (diffusers' guidance_scale): cond + cfg x (cond - "
                                                    "uncond), i.e. the usual CFG at 1 + cfg; 0 = off (Turbo).")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own) "
                                                  "or 'UniPC'; `codex samplers krea2`.")
    max_sequence_length: int = Field(ge=TEMPLATE_SUFFIX_TOKENS + 1, le=MAX_SEQUENCE_LENGTH,
                                     description="Text tokens the transformer sees (the prompt keeps 5 fewer; longer "
                                                 "prompts are truncated and info.json says so).")

    @model_validator(mode="after")
    def _negative_prompt_needs_cfg(self):
        if self.negative_prompt and self.cfg <= 0.0:
            raise PydanticCustomError(
                "cfg", "negative_prompt: it would be ignored: Krea2Pipeline runs classifier-free guidance only when "
                "cfg is above 0 and cfg is {cfg}; raise cfg (e.g. 3.5 on Krea 2 Raw) or leave negative_prompt out",
                {"cfg": self.cfg})
        return self


# _Krea2Fields first, so its Krea 2 descriptions of cfg, negative_prompt and sampler win over the core's.
class Krea2Txt2Img(_Krea2Fields, Txt2ImgParams):
    size_multiple = 16


TASKS = {"txt2img": Krea2Txt2Img}
