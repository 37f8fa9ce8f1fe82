"""Control-image preprocessors: each built-in gives what it claims (canny is OpenCV's own, pixel for pixel), the
hook takes a third party's, annotators name the weights they miss, and `codex preprocess` runs one alone."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy
import pytest
from PIL import Image, ImageDraw, ImageFilter

from codex_core import Preprocessor, PreprocessorParams, hookimpl, installed_preprocessors, plugins, registry
from codex_core import run_preprocessor
from codex_core.errors import UsageError
from codex_core.testing import cli_run


def photo(width: int = 96, height: int = 64) -> Image.Image:
    """A picture with edges of every strength: a fractal, shapes in several colours and a soft gradient."""
    image = Image.effect_mandelbrot((width, height), (-2.0, -1.2, 1.0, 1.2), 40).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 40, 30), fill=(200, 40, 40))
    draw.ellipse((50, 20, 90, 60), outline=(20, 220, 90), width=3)
    draw.line((0, height - 1, width - 1, 0), fill=(90, 90, 250), width=2)
    gradient = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return Image.blend(image, gradient, 0.3)


def pixels(image: Image.Image) -> numpy.ndarray:
    return numpy.asarray(image.convert("RGB"))


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    photo().save(path)
    return path


@pytest.mark.parametrize("low, high", [(100, 200), (30, 90), (150, 151)])
def test_canny_equals_opencv_canny_of_the_same_image_and_thresholds(low, high):
    source = photo()
    result = run_preprocessor("canny", source, {"low_threshold": low, "high_threshold": high})
    expected = cv2.Canny(numpy.asarray(source), low, high)
    assert result.mode == "RGB" and result.size == source.size
    out = pixels(result)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    assert numpy.array_equal(out[..., 0], expected)
    assert set(numpy.unique(expected)) == {0, 255}  # edges were found, and not everywhere


def test_canny_without_opencv_says_which_extra_installs_it(monkeypatch):
    # the core alone installs no OpenCV (a torch-free engine needs none); codex-core[control] brings it
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # what `import cv2` meets when it is not installed
    with pytest.raises(UsageError) as caught:
        run_preprocessor("canny", Image.new("RGB", (16, 16)))
    assert "canny needs OpenCV" in caught.value.message
    assert caught.value.hint == "pip install 'codex-core[control]'"


def test_canny_defaults_are_a1111s_thresholds_and_lower_ones_find_more_edges():
    source = photo()
    default = pixels(run_preprocessor("canny", source))[..., 0]
    assert numpy.array_equal(default, cv2.Canny(numpy.asarray(source), 100, 200))
    looser = pixels(run_preprocessor("canny", source, {"low_threshold": 20, "high_threshold": 40}))[..., 0]
    assert (looser > 0).sum() > (default > 0).sum()


def test_invert_is_255_minus_each_channel():
    source = photo()
    assert numpy.array_equal(pixels(run_preprocessor("invert", source)), 255 - pixels(source))


def test_grayscale_is_the_itu_601_luma_in_three_equal_channels():
    source = pixels(photo()).astype(numpy.int64)
    # Pillow's fixed-point form of L = R*299/1000 + G*587/1000 + B*114/1000
    luma = (source[..., 0] * 19595 + source[..., 1] * 38470 + source[..., 2] * 7471 + 0x8000) >> 16
    out = pixels(run_preprocessor("grayscale", photo()))
    for channel in range(3):
        assert numpy.array_equal(out[..., channel], luma)


def test_blur_is_a_gaussian_blur_of_the_radius_asked():
    source = photo()
    out = run_preprocessor("blur", source, {"radius": 3.0})
    assert numpy.array_equal(pixels(out), pixels(source.filter(ImageFilter.GaussianBlur(3.0))))
    before, after = pixels(source).astype(float), pixels(out).astype(float)
    assert abs(after.mean() - before.mean()) < 2.0  # a blur moves no light, only spreads it
    assert numpy.abs(numpy.diff(after, axis=1)).mean() < numpy.abs(numpy.diff(before, axis=1)).mean() / 2
    assert numpy.array_equal(pixels(run_preprocessor("blur", source, {"radius": 0})), pixels(source))
    flat = Image.new("RGB", (32, 32), (10, 120, 230))
    assert numpy.array_equal(pixels(run_preprocessor("blur", flat, {"radius": 5})), pixels(flat))


@pytest.mark.parametrize("threshold, dilate", [(127, 1), (60, 0), (90, 3)])
def test_scribble_is_the_edge_map_thresholded_then_dilated(threshold, dilate):
    edges = run_preprocessor("canny", photo(), {"low_threshold": 50, "high_threshold": 120})
    blurred = edges.filter(ImageFilter.GaussianBlur(1))  # grey levels for the threshold to cut
    out = pixels(run_preprocessor("scribble", blurred, {"threshold": threshold, "dilate": dilate}))
    lines = numpy.asarray(blurred.convert("L")) > threshold
    padded = numpy.pad(lines, dilate)
    height, width = lines.shape
    grown = numpy.zeros_like(lines)
    for dy in range(2 * dilate + 1):  # a square neighbourhood: any line pixel within `dilate` in x and y
        for dx in range(2 * dilate + 1):
            grown |= padded[dy:dy + height, dx:dx + width]
    assert numpy.array_equal(out[..., 0], numpy.where(grown, 255, 0))
    assert (out[..., 0] == out[..., 2]).all() and grown.any() and not grown.all()


def test_every_input_mode_is_made_rgb_first():
    source = photo().convert("RGBA")
    source.putalpha(200)
    palette = photo().convert("P")
    assert run_preprocessor("invert", source).mode == "RGB"
    assert numpy.array_equal(pixels(run_preprocessor("invert", palette)), 255 - pixels(palette.convert("RGB")))


@pytest.mark.parametrize("values, message", [
    ({"low_threshold": 0}, "preprocess_params.low_threshold: got 0: Input should be greater than or equal to 1"),
    ({"high_threshold": 256}, "preprocess_params.high_threshold: got 256: Input should be less than or equal to 255"),
    ({"low_threshold": "50"}, "preprocess_params.low_threshold: got '50': Input should be a valid integer"),
    ({"low": 50}, "preprocess_params.low: canny has no such parameter; its parameters: low_threshold, high_threshold"),
    ({"low_threshold": 220}, "low_threshold 220 is above high_threshold 200"),
])
def test_a_bad_parameter_is_refused_naming_it_and_what_is_allowed(values, message):
    with pytest.raises(UsageError) as caught:
        run_preprocessor("canny", photo(), values)
    assert message in caught.value.message


def test_an_unknown_preprocessor_names_the_known_ones():
    with pytest.raises(UsageError) as caught:
        run_preprocessor("cany", photo())
    assert caught.value.message.startswith("preprocess: unknown preprocessor 'cany'; known: blur, canny")


def test_an_annotator_names_the_weights_it_misses_and_where_they_go(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(UsageError) as caught:
        run_preprocessor("openpose", photo())
    assert "openpose needs the annotator weights 'body_pose_model.pth'" in caught.value.message
    assert caught.value.hint.startswith(f"put body_pose_model.pth in {tmp_path / 'models' / 'annotators'}")
    folder = tmp_path / "models" / "annotators" / "openpose"
    folder.mkdir(parents=True)
    (folder / "body_pose_model.pth").write_bytes(b"weights")
    with pytest.raises(UsageError) as caught:  # the next file it needs, by name
        run_preprocessor("openpose", photo())
    assert "'hand_pose_model.pth'" in caught.value.message
    for name in ("hand_pose_model.pth", "facenet.pth"):
        (folder / name).write_bytes(b"weights")
    with pytest.raises(UsageError) as caught:  # found: what is missing now is the implementation, said so
        run_preprocessor("openpose", photo())
    assert "its weights are in place, but this version of Codex does not run the annotator yet" in str(caught.value)


class Posterize(PreprocessorParams):
    bits: int = 2


class InTestPreprocessors:
    @hookimpl
    def codex_register_preprocessors(self, register):
        from PIL import ImageOps

        register(Preprocessor("posterize", "fewer levels", lambda image, p: ImageOps.posterize(image, p.bits),
                              Posterize))
        register(Preprocessor("two words", "an invalid name", lambda image, p: image))
        register("not a preprocessor")


@pytest.fixture
def in_test_plugin():
    plugins.reset_for_tests()
    plugins.load_plugins()
    plugins.pm.register(InTestPreprocessors(), name="in-test-preprocessors")
    registry.clear_cache()
    yield
    plugins.reset_for_tests()
    registry.clear_cache()


def test_a_plugin_adds_a_preprocessor_and_an_invalid_one_is_skipped_with_a_warning(in_test_plugin, capsys):
    installed = installed_preprocessors()
    assert "posterize" in installed and "two words" not in installed and "canny" in installed
    warnings = capsys.readouterr().err
    assert "plugin 'in-test-preprocessors' registered an invalid preprocessor (name 'two words' must be one word)" \
        in warnings and "got str, not a codex_core.Preprocessor instance" in warnings
    out = run_preprocessor("posterize", photo(), {"bits": 1})
    assert set(numpy.unique(pixels(out))) <= {0, 128}


# -- the command -----------------------------------------------------------------------------------


def test_codex_preprocess_writes_the_png_and_prints_its_path(image_file, tmp_path):
    result = cli_run(["preprocess", "canny", str(image_file), "--out", str(tmp_path / "out"),
                      "--param", "low_threshold=50", "--param", "high_threshold=150"])
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == tmp_path / "out" / "photo.canny.png" and sorted(path.parent.iterdir()) == [path]
    with Image.open(path) as written:
        assert numpy.array_equal(pixels(written)[..., 0], cv2.Canny(pixels(Image.open(image_file)), 50, 150))
        record = json.loads(written.text["codex"])
    assert record == {"preprocess": "canny", "preprocess_params": {"low_threshold": 50, "high_threshold": 150},
                      "image": str(image_file.resolve())}


def test_codex_preprocess_list_shows_names_parameters_ranges_and_needs():
    rows = {row["name"]: row for row in json.loads(cli_run(["preprocess", "--list", "--json"]).stdout)}
    assert {"canny", "invert", "grayscale", "blur", "scribble", "depth", "openpose", "lineart"} <= set(rows)
    low = rows["canny"]["parameters"]["low_threshold"]
    assert (low["default"], low["minimum"], low["maximum"]) == (100, 1, 255)
    assert rows["canny"]["needs"] == [] and rows["hed"]["needs"] == ["ControlNetHED.pth"]
    # depth (the diffusers kit's) looks for a model folder by name: its needs say so in words
    assert rows["depth"]["needs"] == ["a depth-anything*/dpt* folder (transformers depth estimation, safetensors)"]
    table = cli_run(["preprocess", "--list"]).stdout
    assert "low_threshold=100 (1..255), high_threshold=200 (1..255)" in table


@pytest.mark.parametrize("args, message", [
    (["canny", "{image}", "--param", "low_threshold=300"],
     "--param low_threshold: got 300: Input should be less than or equal to 255"),
    (["canny", "{image}", "--param", "threshold"], "--param: 'threshold' is not KEY=VALUE"),
    (["canny", "{image}", "--param", "low=1"], "--param low: canny has no such parameter"),
    (["edges", "{image}"], "TYPE: unknown preprocessor 'edges'"),
    (["lineart", "{image}"], "TYPE: lineart needs the annotator weights 'sk_model.pth'"),
    (["depth", "{image}"], "TYPE: depth needs a depth-anything*/dpt* folder (transformers depth estimation"),
    (["canny", "{missing}"], "IMAGE: no such image file"),
    (["canny", "{not_an_image}"], "IMAGE: '{not_an_image}' is not a readable image"),
    (["canny"], "give TYPE and IMAGE (or --list)"),
])
def test_codex_preprocess_errors_name_what_is_wrong_exit_2_and_write_nothing(image_file, tmp_path, args, message):
    names = {"image": str(image_file), "missing": str(tmp_path / "nope.png"),
             "not_an_image": str(tmp_path / "notes.png")}
    (tmp_path / "notes.png").write_text("not a picture")
    result = cli_run(["preprocess", *[arg.format(**names) for arg in args], "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"codex: error: {message.format(**names)}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_preprocessing_loads_no_model_library():
    """`codex preprocess` is a light command: OpenCV and numpy for canny, never torch, diffusers or transformers."""
    script = """
import json, sys
from codex_core.testing import cli_run
from PIL import Image
Image.new("RGB", (16, 16), (9, 9, 9)).save(sys.argv[1] + "/in.png")
codes = [cli_run(["preprocess", "--list"]).exit_code,
         cli_run(["preprocess", "canny", sys.argv[1] + "/in.png", "--out", sys.argv[1]]).exit_code]
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = json.loads(subprocess.run([sys.executable, "-c", script, folder], capture_output=True, text=True,
                                           check=True).stdout)
    assert result == {"codes": [0, 0], "heavy": []}
