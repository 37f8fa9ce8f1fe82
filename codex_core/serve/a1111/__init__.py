"""The A1111-compatible API (``/sdapi/v1``) for existing clients (webuiapi, Krita/Photoshop plugins, bots).

Requests are translated into a Codex request for the current model's engine and run through the
same queue and worker as ``/v1`` jobs; responses have A1111's shape (``images`` as base64 PNG,
``parameters``, ``info`` as a JSON string), field for field as A1111's own API (its ``/docs``).

The modules, each a router of its own under ``/sdapi/v1``:

- ``translate``: an A1111 body as a Codex request (which fields map, which are dropped, which are
  listed in ``info.codex_ignored``);
- ``generation``: ``txt2img`` and ``img2img``, queued and waited for, answered in A1111's shape;
- ``checkpoints``: the checkpoints A1111 lists (``sd-models``) and the current one;
- ``options``: ``options``, ``sd-models``, ``scripts``;
- ``samplers``: ``samplers`` and ``schedulers``;
- ``progress``: ``progress``, ``interrupt``, ``skip``;
- ``extras``: ``png-info``.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import extras, generation, options, progress, samplers

router = APIRouter()
for part in (options, samplers, generation, progress, extras):
    router.include_router(part.router)
