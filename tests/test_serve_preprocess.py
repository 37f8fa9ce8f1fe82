"""``/v1/preprocessors`` and ``/v1/preprocess``: the service lists its control-image preprocessors and runs one on an
image (what the UI's ControlNet panel previews), with the checks `codex preprocess` makes, each error a 422 naming
the field. The app is the service's own (``build_service``), its routes called in-process: no job runs."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from codex_core.testing import write_test_image


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from codex_core.serve.service import build_service

    folder = tmp_path_factory.mktemp("preprocess")
    app = build_service("127.0.0.1", 7861, None, False, folder / "state", (str(folder / "in"),), 10_000_000, 10,
                        "cpu")
    (folder / "in").mkdir()
    yield TestClient(app, base_url="http://127.0.0.1:7861"), folder / "in"


def test_the_preprocessors_are_listed_with_their_parameters_and_whether_their_weights_are_there(client):
    http, _ = client
    rows = {row["name"]: row for row in http.get("/v1/preprocessors").json()}
    assert {"canny", "invert", "grayscale", "blur", "scribble", "depth"} <= set(rows)
    canny = rows["canny"]
    assert canny["parameters"]["low_threshold"] == {"default": 100, "description": canny["parameters"][
        "low_threshold"]["description"], "maximum": 255, "minimum": 1, "type": "integer"}
    assert canny["ready"] and canny["problem"] is None
    depth = rows["depth"]  # an annotator without its weights: listed, with what it needs
    assert not depth["ready"] and depth["needs"][0] in depth["problem"]


def test_canny_of_an_image_in_the_roots_and_of_inline_base64_equals_opencvs(client):
    http, roots = client
    source = write_test_image(roots / "photo.png", (48, 32), seed=2)
    expected = cv2.Canny(np.asarray(Image.open(source).convert("RGB")), 60, 120)
    inline = base64.b64encode(open(source, "rb").read()).decode()
    for image in (source, inline, f"data:image/png;base64,{inline}"):
        answer = http.post("/v1/preprocess", json={"preprocess": "canny", "image": image,
                                                   "preprocess_params": {"low_threshold": 60, "high_threshold": 120}})
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        made = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
        assert made.shape == (32, 48, 3) and (made == expected[..., None]).all() and made.any()


@pytest.mark.parametrize("body, named", [
    ({"preprocess": "sobel"}, "preprocess: unknown preprocessor 'sobel'"),
    ({"preprocess": "canny", "preprocess_params": {"low_threshold": 0}}, "preprocess_params.low_threshold: got 0"),
    ({"preprocess": "canny", "preprocess_params": {"sigma": 2}}, "preprocess_params.sigma: canny has no such"),
    ({"preprocess": "depth"}, "preprocess: depth needs a depth-anything*/dpt* folder (transformers depth"),
    ({"preprocess": "openpose"}, "preprocess: openpose needs the annotator weights 'body_pose_model.pth'"),
    ({"preprocess": "canny", "image": "/etc/passwd"}, "image: '/etc/passwd' is outside the folders"),
    ({"preprocess": "canny", "image": "BROKEN"}, "image: "),
    ({"preprocess": "canny", "image": "a\x00b"}, "image: "),
    ({"preprocess": "canny", "image": "x" * 5000}, "image: 5000 characters"),
    ({"preprocess": "canny", "image": "../../etc/passwd"}, "image: '../../etc/passwd' is outside the folders"),
])
def test_what_is_wrong_is_a_422_naming_the_field(client, body, named):
    http, roots = client
    image = write_test_image(roots / "ok.png", (16, 16))
    if body.get("image") == "BROKEN":
        (roots / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
        body = {**body, "image": str(roots / "broken.png")}
    answer = http.post("/v1/preprocess", json={"image": image, **body})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(named.split(":")[0] + ":") and named in detail, detail
    if "broken" in body.get("image", ""):
        assert "is not a readable image" in detail
