"""Strict request validation: types, unknown keys, ranges, shape rules, image inputs."""

import pytest

from codex_core.errors import ParamError
from codex_core.params import Img2ImgParams, InpaintParams, Txt2ImgParams, UpscaleParams, validate
from codex_core.testing import write_test_image

BASE = {"prompt": "x", "steps": 20, "cfg": 7.0, "width": 64, "height": 64}


def problems(model, data):
    with pytest.raises(ParamError) as caught:
        validate(model, data, "eng", "task")
    return "\n".join(caught.value.problems)


def test_valid_request_passes_and_keeps_values():
    params = validate(Txt2ImgParams, {**BASE, "seed": 3}, "eng", "txt2img")
    assert (params.steps, params.cfg, params.seed, params.negative_prompt) == (20, 7.0, 3, "")


def test_integer_is_accepted_for_a_float_field():
    assert validate(Txt2ImgParams, {**BASE, "cfg": 7}, "eng", "txt2img").cfg == 7.0


@pytest.mark.parametrize("field, value, expected", [
    ("steps", "20", "steps: got '20': Input should be a valid integer (allowed: an integer >= 1 and <= 1000)"),
    ("steps", 20.5, "steps: got 20.5"),
    ("batch_size", True, "batch_size: got True"),
    ("cfg", "7", "cfg: got '7'"),
    ("steps", 0, "steps: got 0: Input should be greater than or equal to 1 (allowed: an integer >= 1 and <= 1000)"),
    ("seed", -1, "seed: got -1"),
    ("width", 100, "width: got 100: 100 is not a multiple of 8; nearest valid values: 96 or 104"),
    ("height", 4, "height: got 4"),
])
def test_bad_values_name_field_value_and_what_is_allowed(field, value, expected):
    assert expected in problems(Txt2ImgParams, {**BASE, field: value})


def test_unknown_key_gets_did_you_mean_and_the_allowed_fields():
    text = problems(Txt2ImgParams, {**BASE, "negative": "x"})
    assert "negative: unknown field; did you mean 'negative_prompt'?" in text
    assert "allowed fields: prompt, negative_prompt" in text


def test_missing_required_fields_are_all_listed():
    text = problems(Txt2ImgParams, {"cfg": 7.0})
    for field in ("prompt", "steps", "width", "height"):
        assert f"{field}: required field is missing" in text


def test_init_image_must_exist_and_be_an_image(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    base = {**BASE, "strength": 0.5}
    base.pop("width"), base.pop("height")
    assert "no such image file" in problems(Img2ImgParams, {**base, "init_image": str(tmp_path / "x.png")})
    assert "is not a readable image" in problems(Img2ImgParams, {**base, "init_image": str(tmp_path / "notes.txt")})


def test_init_image_size_must_be_on_stride_unless_resized(tmp_path):
    path = write_test_image(tmp_path / "odd.png", (60, 64))
    base = {"prompt": "x", "steps": 2, "cfg": 7.0, "strength": 0.5, "init_image": path}
    assert "init_image: its width 60 is not a multiple of 8" in problems(Img2ImgParams, base)
    assert validate(Img2ImgParams, {**base, "width": 64, "height": 64}, "e", "t").target_size() == (64, 64)
    assert "height: required when width is given" in problems(Img2ImgParams, {**base, "width": 64})


def test_mask_must_match_init_image(tmp_path):
    init = write_test_image(tmp_path / "init.png", (64, 64))
    mask = write_test_image(tmp_path / "mask.png", (32, 32), mode="L")
    text = problems(InpaintParams, {"prompt": "x", "steps": 2, "cfg": 7.0, "strength": 0.5, "init_image": init,
                                    "mask_image": mask})
    assert "mask_image: its size 32x32 differs from init_image's 64x64" in text


def test_upscale_target_must_be_whole_and_on_stride(tmp_path):
    init = write_test_image(tmp_path / "init.png", (40, 32))
    base = {"prompt": "x", "steps": 2, "cfg": 7.0, "strength": 0.5, "init_image": init}
    text = problems(UpscaleParams, {**base, "upscale_factor": 1.5})  # 40 * 1.5 = 60: not a multiple of 8
    assert "upscale_factor: 1.5 turns the init image's width 40 into 60" in text and "56 or 64" in text
    assert validate(UpscaleParams, {**base, "upscale_factor": 2.0}, "e", "t").target_size() == (80, 64)


def test_an_edit_schema_states_the_engines_image_limit_and_validation_holds_to_it(tmp_path):
    """maxItems on ``images`` is the params model's max_images (a client says the limit before submitting)."""
    from codex_core.params import EditParams

    class ThreeImages(EditParams):
        max_images = 3

    assert EditParams.model_json_schema()["properties"]["images"]["maxItems"] == 1
    images = ThreeImages.model_json_schema()["properties"]["images"]
    assert (images["minItems"], images["maxItems"], images["x-codex-input"]) == (1, 3, "images")
    first = write_test_image(tmp_path / "a.png", (64, 64))
    base = {"prompt": "x", "steps": 2, "cfg": 7.0}
    assert len(validate(ThreeImages, {**base, "images": [first] * 3}, "e", "edit").images) == 3
    assert "images: got 4 images; this model takes at most 3 reference images" in problems(
        ThreeImages, {**base, "images": [first] * 4})
