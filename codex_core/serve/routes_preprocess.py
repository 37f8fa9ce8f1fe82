"""``/v1``'s control-image preprocessors: which there are (``GET /v1/preprocessors``, `codex preprocess --list
--json`) and one run alone on an image (``POST /v1/preprocess``, `codex preprocess`), answered with the PNG.

They run where the jobs run: the annotators' weights are looked for in this service's models folders, and the
image is read as a job's control image is (a path inside the input or models roots, or inline base64), so what
a client previews is what a request's ``controls[].preprocess`` would feed its ControlNet. The fields are named as
in a control (``preprocess``, ``preprocess_params``, ``image``), and so are the errors (422, nothing written).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from ..params import ImagePath
from .bodies import StrictJSONRoute
from .dependencies import InputsDep

router = APIRouter(route_class=StrictJSONRoute)


class PreprocessBody(BaseModel):
    """``POST /v1/preprocess``: an image and the preprocessor to run on it, as a control names them."""

    model_config = ConfigDict(extra="forbid")

    preprocess: str = Field(min_length=1, description="A preprocessor's name (GET /v1/preprocessors).")
    image: str = Field(min_length=1, description="The image: a path the service may read (e.g. from POST "
                                                 "/v1/inputs), a data URL or bare base64.")
    preprocess_params: dict[str, Any] = Field(default_factory=dict, description="The preprocessor's parameters, "
                                                                                "e.g. {\"low_threshold\": 50}.")


class _ImageField(BaseModel):
    """The body's image as a job's input file: how ``Inputs.settle`` finds and checks it."""

    image: ImagePath


@router.get("/v1/preprocessors")
def preprocessors() -> list[dict[str, Any]]:
    """Each preprocessor: name, description, its parameters' defaults and ranges (JSON Schema), the annotator
    weight files it needs and whether they are in the models folders."""
    from .. import preprocessors as registry

    rows = []
    for name, found in sorted(registry.installed().items()):
        try:
            registry.weight_files(found)
            missing = None
        except UsageError as exc:
            missing = exc.message.removeprefix("preprocess: ")
        rows.append({**found.describe(), "ready": missing is None, "problem": missing})
    return rows


@router.post("/v1/preprocess", responses={200: {"content": {"image/png": {}}, "description": "The control image"}})
async def preprocess(body: PreprocessBody, inputs: InputsDep) -> Response:
    """The preprocessor run on the image; the result as a PNG. A bad name or parameter, missing weights or an
    image that does not open (or lies outside what the service may read) is a 422 naming the field."""
    return Response(await run_in_threadpool(_run, body, inputs), media_type="image/png")


def _run(body: PreprocessBody, inputs) -> bytes:
    from .. import preprocessors as registry
    from ..images import open_image

    preprocessor = registry.get(body.preprocess, "preprocess")  # name, parameters, weights: before the image
    registry.validated(preprocessor, body.preprocess_params, "preprocess_params")
    registry.weight_files(preprocessor, "preprocess")
    with tempfile.TemporaryDirectory(prefix="codex-preprocess-") as folder:
        try:
            settled = inputs.settle(_ImageField, {"image": body.image}, Path(folder))  # inline: written here
        except UsageError as exc:  # the field is named already: the job's "invalid request" prefix says nothing here
            raise UsageError(exc.message.removeprefix("invalid request: "), exc.hint) from None
        try:
            _ImageField.model_validate(settled)
        except ValidationError as exc:
            raise UsageError(f"image: {exc.errors(include_url=False)[0]['msg']}") from None
        result = registry.run(body.preprocess, open_image(settled["image"]), body.preprocess_params, "preprocess",
                              "preprocess_params")
    out = io.BytesIO()
    result.save(out, format="PNG")
    return out.getvalue()
