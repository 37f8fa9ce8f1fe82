"""The A1111-compatible API (``/sdapi/v1``) for existing clients (webuiapi, Krita/Photoshop plugins, bots).

Requests are translated into a Codex request for the current model's engine and run through the
same queue and worker as ``/v1`` jobs; responses have A1111's shape (``images`` as base64 PNG,
``parameters``, ``info`` as a JSON string), field for field as A1111's own API (its ``/docs``).

The modules, each a router of its own under ``/sdapi/v1``:

- ``generation``: ``txt2img`` and ``img2img``, queued and waited for, answered in A1111's shape; what
  it builds on: ``translate`` (an A1111 body as a Codex request: which fields map, which are dropped,
  which are listed in ``info.codex_ignored``), ``overrides`` (the options a call runs with) and
  ``hires`` (``enable_hr`` as the job's follow-up step);
- ``checkpoints``: the checkpoints A1111 lists and the current one, which always exists;
- ``options``: ``options``, ``sd-models``, ``refresh-checkpoints``, ``cmd-flags``, ``scripts``;
- ``samplers``: ``samplers`` and ``schedulers``;
- ``progress``: ``progress``, ``interrupt``, ``skip``;
- ``listings``: ``loras``, ``sd-vae``, ``sd-modules``, ``embeddings`` and their refreshes, and the lists
  Codex has nothing for (``hypernetworks``, ``face-restorers``, ``realesrgan-models``, ``prompt-styles``);
- ``extras``: ``png-info``, ``upscalers``, ``latent-upscale-modes``, ``extra-single-image``,
  ``extra-batch-images``, ``interrogate``;
- ``memory``: ``unload-checkpoint``, ``reload-checkpoint``, ``memory``;
- ``controlnet``: sd-webui-controlnet's routes under ``/controlnet`` (``version``, ``model_list``, ``module_list``,
  ``settings``, ``detect``); ``controlnet_units`` reads its ``alwayson_scripts.controlnet.args`` into the request's
  ``controls``, ``controlnet_models`` lists and resolves its model titles (``name [hash]``).

docs/a1111.md says what each endpoint does, next to what A1111 does.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import controlnet, extras, generation, listings, memory, options, progress, samplers

router = APIRouter()
for part in (options, samplers, generation, progress, listings, extras, memory, controlnet):
    router.include_router(part.router)
