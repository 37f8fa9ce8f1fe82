"""The conformance suite's declaration checks catch the mistakes they are for: each check is run on an engine
with that mistake made on purpose (a stride declared too small, a field never passed to the pipeline, a typo
in the preset of a variant the tiny model is not) and must fail saying so."""

from __future__ import annotations

import shutil

import pytest

from codex_core import get_engine, hookimpl
from codex_core.testing import registered, write_test_image
from codex_diffusers.testing.checks import check_fields_reach, check_presets, check_stride

pytestmark = pytest.mark.slow


def in_test(engine):
    class Plugin:
        @hookimpl
        def codex_register_engines(self, register):
            register(engine)

    return registered(Plugin(), f"in-test-{engine.key}")


def test_a_stride_declared_too_small_fails_the_stride_check(tmp_path):
    from codex_sd.engines import StableDiffusion15
    from codex_sd.params import SDTxt2Img

    class Stride4(SDTxt2Img):
        size_multiple = 4  # the SD pipelines need multiples of 8

    class WrongStride(StableDiffusion15):
        key = "sd15_stride4"
        tasks = {"txt2img": Stride4}

    engine = WrongStride()
    engine.presets_dir = get_engine("sd15").presets_dir
    with in_test(engine):
        with pytest.raises(AssertionError, match=r"sd15_stride4 txt2img: size_multiple is 4, but 68x68 \(an odd "
                                                 r"multiple of it\) failed"):
            check_stride("sd15_stride4", "txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 2,
                                                     "seed": 1}, tmp_path)
        check_stride("sd15", "txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 2, "seed": 1},
                     tmp_path / "right")  # the real declaration passes


def test_a_field_the_engine_never_passes_fails_the_field_check(tmp_path):
    from codex_flux.engines import Flux

    class Unmapped(Flux):
        key = "flux_unmapped"
        arguments = {}  # max_sequence_length is never passed: the pipeline's own 512 always runs

    engine = Unmapped()
    engine.presets_dir = get_engine("flux").presets_dir
    request = {"prompt": "a fox", "width": 32, "height": 32, "steps": 2, "seed": 1, "max_sequence_length": 32}
    with in_test(engine):
        with pytest.raises(AssertionError, match=r"max_sequence_length: 32 -> 33 changed neither the pipeline's "
                                                 r"arguments nor its scheduler nor the output"):
            check_fields_reach("flux_unmapped", "txt2img", request, tmp_path)
    check_fields_reach("flux", "txt2img", request, tmp_path / "right")


def test_a_typo_in_another_variants_preset_fails_the_preset_check(tmp_path):
    from codex_flux.engines import Flux

    presets = tmp_path / "presets"
    shutil.copytree(get_engine("flux").presets_dir, presets)
    schnell = presets / "schnell" / "txt2img.yaml"
    schnell.write_text(schnell.read_text().replace("steps: 4", "stpes: 4"))

    class Misspelt(Flux):
        key = "flux_misspelt"

    engine = Misspelt()
    engine.presets_dir = presets
    images = {"init_image": write_test_image(tmp_path / "in.png", (64, 64)),
              "mask_image": write_test_image(tmp_path / "mask.png", (64, 64), mode="L")}
    cases = {"txt2img": {"prompt": "a fox", "width": 32, "height": 32, "seed": 1},
             "img2img": {"prompt": "a fox", "init_image": images["init_image"], "seed": 1},
             "inpaint": {"prompt": "a fox", **images, "seed": 1},
             "edit": {"prompt": "a fox", "images": [images["init_image"]], "seed": 1}}
    check_presets("flux", cases.get)  # the shipped presets, every variant: all valid
    with in_test(engine):
        with pytest.raises(AssertionError) as caught:
            check_presets("flux_misspelt", cases.get)
    problems = str(caught.value).splitlines()[1:]
    assert [line.strip() for line in problems] == [
        "schnell/txt2img.yaml: steps: required field is missing",
        "schnell/txt2img.yaml: stpes: unknown field; did you mean 'steps'? allowed fields: prompt, negative_prompt, "
        "width, height, steps, cfg, true_cfg, seed, sampler, scheduler, sampler_fallback, batch_size, reference_images, "
        "controls, cache, loras, max_sequence_length"]
