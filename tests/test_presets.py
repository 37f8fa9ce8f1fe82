"""Presets fill only what a request leaves out, and every preset is valid for its engine."""

import copy
from pathlib import Path

import pytest

from codex_core import presets, registry
from codex_core.params import is_input_file, validate
from codex_core.samplers import resolve
from codex_core.testing import write_test_image

REPO_PRESETS = Path(__file__).resolve().parents[1] / "presets"


def test_fill_only_never_changes_a_given_field_and_patch_lists_exactly_the_rest():
    spec = registry.get_engine("sd15")
    request = {"prompt": "x", "steps": 3, "cfg": 1.5}
    filled = presets.fill(spec, "txt2img", request)
    preset = presets.load_preset(spec.presets_dir / "txt2img.yaml")
    assert filled.request["steps"] == 3 and filled.request["cfg"] == 1.5
    assert filled.patch == {k: v for k, v in preset.items() if k not in request}
    assert filled.files == [str(spec.presets_dir / "txt2img.yaml")]


def test_a_requested_sampler_does_not_get_the_presets_schedule_type():
    spec = registry.get_engine("sd15")
    filled = presets.fill(spec, "txt2img", {"prompt": "x", "sampler": "Euler a"})
    assert "scheduler" not in filled.patch and "sampler" not in filled.patch


def test_engine_presets_are_the_repository_presets():
    assert registry.get_engine("sd15").presets_dir.resolve() == REPO_PRESETS / "sd15"


def _preset_id(path):
    return str(path.relative_to(REPO_PRESETS))


@pytest.mark.parametrize("preset", sorted(REPO_PRESETS.rglob("*.yaml")), ids=_preset_id)
def test_every_preset_validates_against_its_engine_schema(preset, tmp_path):
    """presets/<engine>/[<variant>/]<task>[@<profile>][.<mode>].yaml: every value must pass the engine's schema."""
    engine, *variant, _ = preset.relative_to(REPO_PRESETS).parts
    base, _, profile = preset.name.removesuffix(".yaml").partition("@")
    task, _, mode = base.partition(".")
    spec = registry.get_engine(engine)
    assert task in spec.tasks and (not variant or variant[0] in spec.variants)
    assert preset.read_text().startswith("#"), "each preset says where its values come from"
    inputs = {"init_image": write_test_image(tmp_path / "i.png", (64, 64)),
              "mask_image": write_test_image(tmp_path / "m.png", (64, 64), mode="L")}
    inputs["images"] = [inputs["init_image"]]  # an edit's reference images
    inputs["last_image"] = inputs["init_image"]  # first/last frame
    inputs["reference_images"] = [inputs["init_image"]]  # wan_vace's; sd15/sdxl's image prompts are objects
    fields = spec.params_model(task).model_fields
    properties = spec.params_model(task).model_json_schema().get("properties", {})
    # a list input only where it is a list of image paths (flux's reference_images are objects, Redux's)
    takes = {k for k in fields if not isinstance(inputs.get(k), list)
             or properties.get(k, {}).get("items", {}).get("x-codex-input") == "image"}
    request = {**({"prompt": "x"} if "prompt" in fields else {}),
               **{k: v for k, v in inputs.items() if k in takes}, **({"mode": mode} if mode else {})}
    request.update(_required_input_files(spec.params_model(task), request, tmp_path))
    filled = presets.fill(spec, task, request, variant[0] if variant else None, profile or None,
                          presets.mode_layers(mode))
    assert str(preset) in filled.files
    params = validate(spec.params_model(task), filled.request, engine, task)  # raises on a rejected value
    if spec.sampler_family:
        resolve(spec.sampler_family, params.sampler, params.scheduler, params.model_dump(), engine, task,
                *registry.samplers_for(spec))


def _required_input_files(model, request, tmp_path):
    """A file for each required input field the request lacks, by its schema's x-codex-input (e.g. wan_animate's
    character_image and pose/face videos): images 64x64, videos of 5 frames 64x64 (one length: tasks may ask
    several videos to match)."""
    import imageio_ffmpeg
    import numpy as np

    properties = model.model_json_schema().get("properties", {})
    files = {}
    for name, field in model.model_fields.items():
        if name in request or not field.is_required():
            continue
        kind = properties.get(name, {}).get("x-codex-input")
        if kind == "image":
            files[name] = write_test_image(tmp_path / f"{name}.png", (64, 64))
        elif kind == "video":
            path = tmp_path / f"{name}.mp4"
            writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=16, macro_block_size=1,
                                                 output_params=["-loglevel", "error"])
            writer.send(None)
            for index in range(5):
                writer.send(np.full((64, 64, 3), 40 * index, np.uint8))
            writer.close()
            files[name] = str(path)
    return files


def _variant_engine(presets_dir=None, **attributes):
    """A copy of sd15 with checkpoint variants "full" and "fast" (read from model_index.json's "variant")."""
    import json as jsonlib

    engine = copy.copy(registry.get_engine("sd15"))
    engine.variants, engine.tiny_variant = ("full", "fast"), "fast"
    engine.detect_variant = lambda path: jsonlib.loads((path / "model_index.json").read_text()).get("variant")
    if presets_dir is not None:
        engine.presets_dir = presets_dir
    for name, value in attributes.items():
        setattr(engine, name, value)
    return engine


def test_variant_presets_follow_the_checkpoint(tmp_path):
    """An engine with checkpoint variants reads presets/<engine>/<variant>/ for the variant it finds."""
    from codex_core import sources
    from codex_core.errors import UsageError

    for variant, steps in (("fast", 4), ("full", 28)):
        (tmp_path / "presets" / variant).mkdir(parents=True)
        (tmp_path / "presets" / variant / "txt2img.yaml").write_text(f"# test\nsteps: {steps}\n")
    spec = _variant_engine(tmp_path / "presets")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"variant": "full"}')
    source = sources.resolve(spec, str(model))
    assert sources.variant_of(spec, source) == "full"
    assert presets.fill(spec, "txt2img", {}, "full").patch == {"steps": 28}
    assert sources.variant_of(spec, sources.resolve(spec, "tiny")) == "fast"
    (model / "model_index.json").write_text("{}")
    with pytest.raises(UsageError, match="cannot tell which sd15 variant"):
        sources.variant_of(spec, source)


def test_engine_checks_that_depend_on_the_variant_run_before_loading(tmp_path, monkeypatch):
    from codex_core.errors import ParamError
    from codex_core.orchestrator import RunOptions, prepare

    def no_cfg_on_fast(task, params, variant):
        return [f"cfg: got {params.cfg}: the {variant} variant has no guidance; use 0"] if params.cfg else []

    spec = _variant_engine(variants=("fast",), check_request=no_cfg_on_fast)
    monkeypatch.setattr(registry, "get_engine", lambda key: spec)
    request = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "cfg": 7.0, "sampler": "Euler"}
    with pytest.raises(ParamError, match="cfg: got 7.0: the fast variant has no guidance"):
        prepare("sd15", "txt2img", request, RunOptions(model="tiny"))
    assert prepare("sd15", "txt2img", {**request, "cfg": 0.0}, RunOptions(model="tiny")).variant == "fast"


def test_named_profiles_are_picked_with_preset_and_fill_before_the_base(tmp_path):
    from codex_core.errors import UsageError

    (tmp_path / "txt2img.yaml").write_text("# base\nwidth: 1024\nheight: 1024\nsteps: 30\n")
    (tmp_path / "txt2img@light.yaml").write_text("# light\nwidth: 512\nheight: 512\n")
    spec = copy.copy(registry.get_engine("sd15"))
    spec.presets_dir = tmp_path
    filled = presets.fill(spec, "txt2img", {"height": 768}, profile="light")
    assert filled.patch == {"width": 512, "steps": 30} and filled.profile == "light"
    assert presets.profiles(spec, "txt2img") == ["light"]
    with pytest.raises(UsageError, match="has no preset 'tiny'; available: light"):
        presets.fill(spec, "txt2img", {}, profile="tiny")
