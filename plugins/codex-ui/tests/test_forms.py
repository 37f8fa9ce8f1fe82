"""The UI's pure parts on real schemas and files: forms from schemas, field values, problems by field, the
models folders' pickers' values, a run's summary and preview, PNG Info (Codex and A1111 files), inpainting
masks from brush layers."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from codex_core import get_engine, installed_engines, request_schema, samplers_for
from codex_ui.forms import (UNSET, FieldSpec, count_problem, form_fields, parse_request, problems_by_field,
                            show_request, value_of, with_value)
from codex_ui.masks import mask_from_layers
from codex_ui.pickers import loras_from_chips, shows
from codex_ui.results import preview_gallery, summary
from codex_ui.pnginfo import from_a1111, read_parameters


def fields_of(engine: str, task: str) -> dict[str, FieldSpec]:
    return {spec.name: spec for spec in form_fields(request_schema(engine, task))}


def test_every_installed_engine_and_task_has_a_form_of_known_kinds():
    for key, engine in installed_engines().items():
        for task in engine.tasks:
            fields = fields_of(key, task)
            assert fields, (key, task)
            assert {spec.kind for spec in fields.values()} <= {"text", "long_text", "int", "float", "bool", "choice",
                                                              "image", "images", "video", "json", "loras",
                                                              "vae", "controls"}
            assert "mode" not in fields  # the top bar's


def test_sd15_txt2img_form_kinds_ranges_presets_and_samplers():
    fields = fields_of("sd15", "txt2img")
    assert fields["prompt"].kind == "long_text" and fields["prompt"].required
    width = fields["width"]
    assert (width.kind, width.minimum, width.maximum, width.default) == ("int", 8, 16384, 512)
    assert width.placeholder() == "512" and "preset: 512" in width.hint()
    assert fields["cfg"].kind == "float"
    assert fields["sampler"].kind == "choice" and {"Euler a", "DPM++ 2M"} <= set(fields["sampler"].choices)
    assert fields["prompt_syntax"].choices == ("a1111", "plain")
    loras = fields["loras"]  # a picker: the range is its scale's, the most LoRAs a request takes
    assert (loras.kind, loras.minimum, loras.maximum, loras.max_items) == ("loras", -4.0, 4.0, 8)
    assert "range" not in loras.hint()
    assert fields["vae"].kind == "vae" and fields["mode_lora"].kind == "json"  # one LoRA object: JSON
    assert fields["seed"].placeholder() is None and "preset: none" in fields["seed"].hint()


def test_image_fields_and_flow_sampler_choices():
    inpaint = fields_of("sd15", "inpaint")
    assert inpaint["init_image"].kind == inpaint["mask_image"].kind == "image"
    flux = fields_of("flux", "txt2img")
    served = {sampler.name for sampler in samplers_for(get_engine("flux"))[0]}
    assert set(flux["sampler"].choices) == served and "Euler a" not in served


def test_video_fields_get_a_video_upload_and_the_video_tasks_their_tabs():
    """A ``VideoPath`` field (``x-codex-input: "video"``), required or optional, is a video upload; the video tasks'
    tabs come after the image ones in the order people know them."""
    from codex_core import Txt2VidParams, VideoPath, VideoResampleFields
    from codex_ui.tabs import ordered_tasks

    class Vid2Vid(VideoResampleFields, Txt2VidParams):
        init_video: VideoPath
        mask_video: VideoPath | None = None

    fields = {spec.name: spec for spec in form_fields(Vid2Vid.model_json_schema())}
    assert (fields["init_video"].kind, fields["init_video"].required) == ("video", True)
    assert (fields["mask_video"].kind, fields["mask_video"].required) == ("video", False)
    assert fields["video_fps"].kind == "float" and (fields["video_fps"].minimum, fields["video_fps"].maximum) == (0, 240)
    assert fields["num_frames"].kind == "int" and fields["prompt"].kind == "long_text"
    assert value_of(fields["init_video"], "/srv/inputs/clip.mp4") == "/srv/inputs/clip.mp4"
    assert value_of(fields["mask_video"], None) is UNSET  # cleared: the key leaves the request
    engines = {"wan": {"tasks": ["animate", "flf2vid", "vid2vid", "img2vid", "txt2vid", "ref2vid", "zoom"]}}
    assert ordered_tasks(engines) == ["txt2vid", "img2vid", "vid2vid", "ref2vid", "flf2vid", "animate", "zoom"]


def test_an_edit_form_takes_the_engines_number_of_reference_images_and_says_when_the_count_is_wrong():
    images = fields_of("flux", "edit")["images"]
    assert (images.kind, images.min_items, images.max_items, images.required) == ("images", 1, 1, True)
    assert count_problem(images, ["a.png"], "flux") is None
    assert count_problem(images, None, "flux") == "add at least 1 reference image (the first is the one edited)"
    assert count_problem(images, [], "flux") == "add at least 1 reference image (the first is the one edited)"
    assert count_problem(images, ["a.png", "b.png"], "flux") == (
        "2 images; flux takes at most 1 reference image: remove 1 (the first is the one edited)")
    several = FieldSpec(name="images", kind="images", label="Images", min_items=1, max_items=3)
    assert count_problem(several, ["a.png"] * 3, "qwen_image") is None
    assert "4 images; qwen_image takes at most 3 reference images: remove 1" in count_problem(
        several, ["a.png"] * 4, "qwen_image")
    assert count_problem(several, "typed.png", "qwen_image") is None  # not a list: the service says what it wants


@pytest.mark.parametrize("kind, raw, expected", [
    ("int", 64.0, 64), ("int", 64.5, 64.5), ("int", None, UNSET), ("float", 7.5, 7.5), ("text", "", UNSET),
    ("long_text", "  ", UNSET), ("long_text", "a cat", "a cat"), ("json", '[{"name": "x"}]', [{"name": "x"}]),
    ("json", "[oops", "[oops"), ("choice", "Euler", "Euler"), ("bool", True, True),
])
def test_values_are_sent_as_typed_never_rounded(kind, raw, expected):
    assert value_of(FieldSpec(name="f", kind=kind, label="f"), raw) == expected


def test_a_cleared_field_leaves_the_request():
    request = with_value({"width": 64}, "steps", 2)
    assert request == {"width": 64, "steps": 2}
    assert with_value(request, "width", UNSET) == {"steps": 2}


def test_problems_go_to_their_fields():
    problems = ["width: got 65: 65 is not a multiple of 8", "loras.0.scale: too big", "something else"]
    found = problems_by_field(problems, ["width", "loras"])
    assert found == {"width": "got 65: 65 is not a multiple of 8", "loras": "too big", "": "something else"}


def test_the_request_panel_round_trips_and_says_what_is_wrong():
    request = {"prompt": "ünïcode", "width": 64}
    assert parse_request(show_request(request)) == request
    assert parse_request("  ") == {}
    with pytest.raises(ValueError, match="line 1 column 2"):
        parse_request("{oops")
    with pytest.raises(ValueError, match="must be an object"):
        parse_request("[1]")


def test_png_info_reads_a_codex_png(tmp_path):
    from codex_core.testing import run_json

    request = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2, "seed": 7}
    result = run_json("sd15", "txt2img", request, tmp_path)
    png = next(path for path in result["files"] if path.endswith(".png"))
    found = read_parameters(Path(png), "flux", set(installed_engines()))
    assert found.target == ("sd15", "txt2img") and found.request == request
    assert "Seed: 7" in found.text


def test_png_info_reads_an_a1111_png(tmp_path):
    text = ("a castle, (masterpiece:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: "
            "Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: abc, Denoising strength: 0.5, Clip skip: 2")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    found = read_parameters(path, "sd15", set(installed_engines()))
    assert found.target == ("sd15", "img2img")  # it records a denoising strength
    assert found.request == {"prompt": "a castle, (masterpiece:1.2)", "negative_prompt": "blurry", "steps": 20,
                             "sampler": "DPM++ 2M", "scheduler": "Karras", "cfg": 7.0, "seed": 1234, "strength": 0.5,
                             "clip_skip": 2, "width": 512, "height": 768}
    assert from_a1111("just a prompt") == {"prompt": "just a prompt"}


def test_png_info_on_a_file_without_parameters_says_so(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    found = read_parameters(path, "sd15", set(installed_engines()))
    assert found.request is None and found.target is None and "no parameters" in found.text


def test_the_mask_is_every_painted_pixel(tmp_path):
    background = tmp_path / "bg.png"
    Image.new("RGB", (16, 8), (10, 20, 30)).save(background)
    layer = Image.new("RGBA", (16, 8), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 128), (2, 1, 6, 4))
    layer.save(tmp_path / "layer.png")
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (16, 8), (0, 0, 0, 0)).save(empty)
    mask_path = mask_from_layers(str(background), [str(empty), str(tmp_path / "layer.png")], tmp_path)
    with Image.open(mask_path) as mask:
        assert mask.mode == "L" and mask.size == (16, 8)
        white = {(x, y) for x in range(16) for y in range(8) if mask.getpixel((x, y)) == 255}
    assert white == {(x, y) for x in range(2, 6) for y in range(1, 4)}
    assert mask_from_layers(str(background), [str(empty)], tmp_path) is None



def test_png_info_reads_a_codex_video(tmp_path):
    from codex_core.testing import run_json

    request = {"prompt": "waves", "width": 32, "height": 32, "num_frames": 5, "steps": 2, "seed": 8}
    result = run_json("wan_ti2v_5b", "txt2vid", request, tmp_path)
    video = next(path for path in result["files"] if path.endswith(".mp4"))
    found = read_parameters(Path(video), "sd15", set(installed_engines()))
    assert found.target == ("wan_ti2v_5b", "txt2vid") and found.request == request


def test_drafts_number_every_text_sent_to_the_panel_in_the_order_sent():
    import copy

    from codex_ui.drafts import Drafts

    drafts = Drafts()
    drafts["txt2img"] = {"prompt": "a"}
    first = drafts.show(drafts["txt2img"])
    drafts["txt2img"]["steps"] = 2
    second = drafts.show(drafts["txt2img"])
    # the page script keeps the text with the highest number: the later one, whichever the browser applies last
    assert first == "1\n" + show_request({"prompt": "a"}) and second == "2\n" + show_request({"prompt": "a", "steps": 2})
    # a session's drafts are copied from the page's initial value: each session counts from its own start
    fresh = copy.deepcopy(Drafts())
    assert isinstance(fresh, Drafts) and fresh.show({}) == "1\n{}"


def test_the_lora_picker_keeps_what_was_chosen_and_adds_names_or_typed_paths():
    current = [{"name": "ink", "scale": 0.6}, {"path": "/data/far.safetensors", "scale": 0.3, "into": "transformer"}]
    chips = ["/data/far.safetensors", "ink", "styles/soft", "~/mine.safetensors", "unlisted"]
    assert loras_from_chips(chips, current, ["ink", "styles/soft"]) == [
        current[1], current[0], {"name": "styles/soft", "scale": 1.0}, {"path": "~/mine.safetensors", "scale": 1.0},
        {"name": "unlisted", "scale": 1.0}]  # an unlisted bare name stays a name: the service says if it is none
    assert loras_from_chips(["ink"], current, ["ink"]) == [current[0]]  # a chip removed: its LoRA leaves
    assert loras_from_chips([], current, ["ink"]) == []


@pytest.mark.parametrize("kind, value, expected", [
    ("loras", None, True), ("loras", [{"name": "a", "scale": 2}], True), ("loras", [{"path": "/x.safetensors"}], True),
    ("loras", [{"name": "a"}, {"name": "a"}], False), ("loras", [{"scale": 1}], False), ("loras", "ink", False),
    ("loras", [["ink", 1]], False), ("vae", "bright", True), ("vae", None, True), ("vae", 3, False),
])
def test_a_value_the_picker_cannot_show_falls_back_to_a_box(kind, value, expected):
    assert shows(FieldSpec(name=kind, kind=kind, label=kind), value) is expected


def test_the_summary_shows_the_loras_as_given_the_vae_and_where_an_interrupt_stopped():
    info = {"seed": 0, "interrupted_at_step": 7, "steps_planned": 20, "sampler_effective": "Euler",
            "request": {"width": 64, "vae": "bright-vae", "prompt": "long text, not summarised",
                        "loras": [{"name": "ink", "path": None, "scale": 0.6, "into": None}]}}
    assert summary(info) == {"seed": 0, "interrupted_at_step": 7, "sampler": "Euler", "width": 64,
                             "vae": "bright-vae", "loras": [{"name": "ink", "scale": 0.6}]}
    assert "loras" not in summary({"request": {"loras": []}})


def test_a_preview_event_is_shown_as_the_png_the_service_sent(tmp_path):
    import base64
    import io

    sent = Image.new("RGB", (12, 8), (10, 200, 30))
    buffer = io.BytesIO()
    sent.save(buffer, format="PNG")
    gallery = preview_gallery({"id": "j", "step": 4, "steps": 150, "width": 12, "height": 8,
                               "png": base64.b64encode(buffer.getvalue()).decode()})
    [shown] = gallery.value
    assert shown["caption"] == "preview · step 4/150"
    with Image.open(shown["image"]["path"]) as image:  # as a PNG: the pixels the service sent, not re-encoded
        assert image.format == "PNG" and image.convert("RGB").tobytes() == sent.tobytes()
