"""Inputs nobody typed by hand: each is refused before anything loads with a message naming it, or runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codex_core import plugins, registry
from codex_core.errors import UsageError
from codex_core.orchestrator import RunOptions, prepare
from codex_core.testing import add_entry_point, clear_model_cache, cli_run, loaded_models

CODEX = Path(sys.executable).parent / "codex"
SMALL = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1}


def run_usage_error(tmp_path, *args, input=None, task="txt2img"):
    out = tmp_path / "out"
    result = cli_run(["run", "sd15", task, "--model", "tiny", "--out", str(out), *args], input=input)
    assert result.exit_code == 2, result.stderr
    assert not out.exists()
    return result.stderr


def test_a_request_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    request = tmp_path / "request.json"
    request.write_bytes('{"prompt": "caf\u00e9"}'.encode("latin-1"))
    err = run_usage_error(tmp_path, "--json", f"@{request}")
    assert f"--json: {request} is not UTF-8 text (byte 0xe9 at offset 15" in err


def test_stdin_that_is_not_utf8_is_a_usage_error(tmp_path):
    completed = subprocess.run([str(CODEX), "run", "sd15", "txt2img", "--model", "tiny", "--json", "-", "--out",
                                str(tmp_path / "out")], input=b'{"prompt": "\xff"}', capture_output=True, timeout=120)
    assert completed.returncode == 2 and b"--json: stdin is not UTF-8 text (byte 0xff" in completed.stderr


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    request = tmp_path / "request.json"
    request.write_bytes(b"\xef\xbb\xbf" + json.dumps(SMALL).encode())
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out", str(tmp_path / "out"),
                      "--json", f"@{request}"])
    assert result.exit_code == 0, result.stderr


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path):
    err = run_usage_error(tmp_path, "--json", '{"prompt": "x", "steps": 2, "steps": 30}')
    assert "the key 'steps' appears twice in one object" in err


@pytest.mark.parametrize("text, message", [
    ('"a\\ud800b"', "prompt: contains a lone surrogate (U+D800) at character 1"),
    ('"a\\u0000b"', "prompt: contains the control character U+0000 at character 1"),
])
def test_text_a_tokenizer_or_png_chunk_would_reject_names_the_field(tmp_path, text, message):
    err = run_usage_error(tmp_path, "--json", '{"prompt": %s}' % text)
    assert message in err


def test_tabs_and_line_breaks_are_text(tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out", str(tmp_path / "out"),
                      "--json", json.dumps({**SMALL, "prompt": "a fox\n\tin snow"})])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinities_are_not_finite_numbers(tmp_path, value):
    err = run_usage_error(tmp_path, "--json", '{"prompt": "x", "cfg": %s, "width": %s}' % (value, value))
    assert "cfg: got " in err and "width: got " in err and err.count("not a finite number") == 2


def test_a_sampler_with_a_schedule_and_a_conflicting_scheduler_names_both(tmp_path):
    err = run_usage_error(tmp_path, "--json", '{"prompt": "x", "sampler": "DPM++ 2M Karras", "scheduler": "Exponential"}')
    assert "'DPM++ 2M Karras' names the schedule type 'Karras' and scheduler is 'Exponential': the two conflict" in err


def test_an_output_folder_that_cannot_be_created_fails_before_loading(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match="cannot create .* is a file, not a folder"):
        prepare("sd15", "txt2img", SMALL, RunOptions(model="tiny", out=tmp_path / "a-file" / "runs"))
    with pytest.raises(UsageError, match="is a file, not a folder"):
        prepare("sd15", "txt2img", SMALL, RunOptions(model="tiny", out=tmp_path / "a-file"))
    err = run_usage_error(tmp_path, "--json", json.dumps(SMALL), "--out", str(tmp_path / "a-file" / "runs"))
    assert "--out: cannot create" in err


NO_SUCH_USER = "~nosuchuser-codex"  # ~NAME of a user no machine running the tests has


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("out, message", [
    ("/proc/codex-out", "--out: cannot write '/proc/codex-out': making a folder in '/proc' fails"),
    (f"{NO_SUCH_USER}/runs", f"--out: '{NO_SUCH_USER}/runs' starts with {NO_SUCH_USER}, the home folder of a user"),
    ("o" * 300, "has a 300-byte name in it; a file or folder name has at most 255"),
])
def test_an_out_folder_the_system_will_not_make_is_refused_before_loading(out, message):
    """Not a folder the mode bits forbid (root passes those): one no folder can be made in, such as /proc."""
    clear_model_cache()
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", out, "--json", json.dumps(SMALL)])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert loaded_models() == []


LONG = "a" * 5000


@pytest.mark.parametrize("model, message", [
    (LONG, "is 5,000 bytes long; a path has at most 4,096"),
    ("/tmp/" + "d/" * 2100 + "m.safetensors", "bytes long; a path has at most 4,096"),
    ("x" * 300 + ".safetensors", "has a 312-byte name in it"),
    ("a\0b", "contains a NUL byte, which no file name can"),
    (f"{NO_SUCH_USER}/m.safetensors", f"starts with {NO_SUCH_USER}, the home folder of a user this machine does not"),
])
def test_a_model_no_file_system_could_hold_is_a_usage_error_not_an_oserror(tmp_path, model, message):
    err = run_usage_error(tmp_path, "--json", json.dumps(SMALL), "--model", model)
    assert "--model: " in err and message in err and "Error:" not in err
    assert len(err) < 1000  # an excerpt of the value, not all 5,000 characters


@pytest.mark.parametrize("task, field, value", [
    ("txt2img", "vae", NO_SUCH_USER),
    ("txt2img", "vae", LONG),
    ("img2img", "init_image", f"{NO_SUCH_USER}/in.png"),
    ("img2img", "init_image", "x" * 300 + ".png"),
    ("txt2img", "loras", [{"path": f"{NO_SUCH_USER}/style.safetensors"}]),
    ("txt2img", "loras", [{"path": "x" * 300 + ".safetensors"}]),
])
def test_a_request_path_no_file_system_could_hold_is_the_fields_error(tmp_path, task, field, value):
    request = {**SMALL, field: value, **({"strength": 0.5} if task == "img2img" else {})}
    err = run_usage_error(tmp_path, "--json", json.dumps(request), task=task)
    assert f"- {field}" in err
    assert "the home folder of a user this machine does not have" in err or "byte" in err, err


def test_an_unknown_compile_backend_is_refused_before_loading(tmp_path):
    clear_model_cache()
    for given in ([], ["--compile", "regional"]):  # with --compile off it would otherwise be ignored
        err = run_usage_error(tmp_path, "--json", json.dumps(SMALL), "--compile-backend", "nope", *given)
        assert "--compile-backend: unknown backend 'nope'; this torch has:" in err and "eager" in err
    assert loaded_models() == []


@pytest.mark.parametrize("server", ["notaurl", "http://", "ftp://127.0.0.1:7861", "http://127.0.0.1:99999",
                                    "http://127.0.0.1:7861/?x=1"])
def test_a_server_that_is_not_an_http_url_is_a_usage_error(server):
    result = cli_run(["run", "sd15", "txt2img", "--server", server, "--json", json.dumps(SMALL)])
    assert result.exit_code == 2 and f"--server: {server!r} is not an http(s) URL of a service" in result.stderr


@pytest.fixture
def fresh_plugins():
    plugins.reset_for_tests()
    yield
    plugins.reset_for_tests()


def test_load_list_naming_nothing_installed_says_so(fresh_plugins, monkeypatch, capsys):
    monkeypatch.setenv("CODEX_LOAD_PLUGINS", "sd,no-such-plugin")
    assert set(registry.engines()) == {"sd15", "sdxl", "sd35"}
    err = capsys.readouterr().err
    assert "CODEX_LOAD_PLUGINS names 'no-such-plugin', which no installed plugin is called" in err


def test_a_disabled_plugin_is_not_answered_with_pip_install(fresh_plugins, monkeypatch):
    monkeypatch.setenv("CODEX_DISABLE_PLUGINS", "codex-sd")
    with pytest.raises(UsageError) as caught:
        registry.get_engine("sd15")
    assert "provided by codex-sd, which is installed but named in CODEX_DISABLE_PLUGINS" in caught.value.hint
    assert "pip install" not in str(caught.value)


@pytest.mark.parametrize("raised, shown", [("SystemExit('bye')", "SystemExit: bye"),
                                           ("type('Odd', (BaseException,), {})('odd')", "Odd: odd"),
                                           ("ImportError('no module named cuda_thing')",
                                            "ImportError: no module named cuda_thing")])
def test_a_plugin_that_fails_at_import_is_reported_and_skipped(fresh_plugins, monkeypatch, tmp_path, capsys, raised,
                                                               shown):
    (tmp_path / "exits_at_import.py").write_text(f"raise {raised}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_point(monkeypatch, "exits", "exits_at_import")
    assert "sd15" in registry.engines()
    assert plugins.load_errors["exits"] == shown
    assert 'error importing plugin "exits"' in capsys.readouterr().err


def test_help_lists_whole_command_descriptions():
    text = cli_run(["--help"]).stdout
    assert "List installed engines with their tasks, modes and plugin package." in " ".join(text.split())


@pytest.mark.slow
def test_the_progress_bar_appears_when_the_first_step_starts(tmp_path):
    env = {**os.environ, "COLUMNS": "120"}
    completed = subprocess.run([str(CODEX), "run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path),
                                "--json", json.dumps({**SMALL, "steps": 3})], capture_output=True, text=True,
                               env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    frames = completed.stderr.replace("\r", "\n").splitlines()
    counts = [line.split("|")[-1].split()[0] for line in frames if line.startswith("sd15 txt2img:")]
    assert counts[0] == "0/3" and counts[-1] == "3/3", counts


# -- metadata: corrupt, truncated, misshapen, or not a codex output at all ---------------------------


@pytest.fixture(scope="module")
def png_run(tmp_path_factory):
    from codex_core.testing import run_json

    return run_json("sd15", "txt2img", SMALL, tmp_path_factory.mktemp("png") / "runs")


def _png_with_chunks(path: Path, **chunks: str) -> Path:
    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        meta.add_text(key, value)
    Image.new("RGB", (8, 8)).save(path, pnginfo=meta)
    return path


def test_info_prints_the_valid_chunks_and_exits_2_on_the_damaged_one(tmp_path):
    png = _png_with_chunks(tmp_path / "damaged.png", parameters="a fox\nSteps: 2", codex='{"engine": "sd15", "tas')
    result = cli_run(["info", str(png)])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"parameters": "a fox\nSteps: 2"}
    assert "its 'codex' text chunk is not valid JSON" in result.stderr and "truncated or corrupt" in result.stderr
    assert cli_run(["info", str(png), "--parameters"]).stdout == "a fox\nSteps: 2\n"


@pytest.mark.parametrize("chunk, message", [
    ('[1, 2]', "is a JSON list, not an object"),
    ('{"engine": "sd15", "task": "txt2img", "request": "x", "model": {}}', "'request' is str, not dict"),
])
def test_a_record_of_the_wrong_shape_is_named(tmp_path, chunk, message):
    png = _png_with_chunks(tmp_path / "odd.png", codex=chunk)
    for command in (["info", str(png)], ["replay", str(png), "--out", str(tmp_path / "out")]):
        result = cli_run(command)
        assert result.exit_code == 2 and message in result.stderr, (command, result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, content, message", [
    ("fake.png", b"not a png at all", "not a readable PNG image"),
    ("truncated.png", None, "not a readable PNG image"),
    ("photo.png", "jpeg", "is a JPEG image, not a PNG"),
    ("fake.mp4", b"\x00\x00\x00\x18ftypmp42 but then nothing", "not a readable video"),
    ("info.json", b'{"engine": "sd15", "request": {"prompt"', "not valid JSON"),
    ("latin.json", '{"prompt": "caf\u00e9"}'.encode("latin-1"), "not UTF-8 text"),
    ("notes.txt", b"hello", "unsupported file"),
])
def test_a_file_that_is_not_a_codex_output_exits_2_saying_what_it_is(tmp_path, png_run, name, content, message):
    path = tmp_path / name
    if content is None:
        data = (Path(png_run["run_dir"]) / "0000.png").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "jpeg":
        from PIL import Image

        Image.new("RGB", (8, 8)).save(path, format="JPEG")
    else:
        path.write_bytes(content)
    for command in ("info", "replay"):
        result = cli_run([command, str(path), "--out", str(tmp_path / "out")] if command == "replay"
                         else [command, str(path)])
        assert result.exit_code == 2 and message in result.stderr, (command, result.stderr)


# -- plugins whose hooks fail ------------------------------------------------------------------------


def test_a_plugin_whose_hook_raises_is_reported_and_skipped(fresh_plugins, capsys):
    from codex_core import hookimpl

    class Raising:
        @hookimpl(tryfirst=True)  # called first: the others still get their turn
        def codex_register_engines(self, register):
            raise RuntimeError("no GPU driver found")

        @hookimpl
        def codex_register_commands(self, cli):
            raise SystemExit(3)

    plugins.load_plugins()
    plugins.pm.register(Raising(), name="raising")
    registry.clear_cache()
    assert {"sd15", "sdxl", "flux"} <= set(registry.engines())
    assert "plugin 'raising': codex_register_engines raised RuntimeError: no GPU driver found; skipped" in (
        capsys.readouterr().err)
    help_result = cli_run(["--help"])
    assert help_result.exit_code == 0 and "engines" in help_result.stdout
    rows = {row["name"]: row for row in json.loads(cli_run(["plugins", "--json"]).stdout)}
    assert "codex_register_commands raised SystemExit" in rows["raising"]["error"]
    assert "error" not in rows["sd"]


# -- a model folder of another family or variant ------------------------------------------------------


@pytest.mark.parametrize("engine, task, folder_of, what, fits", [
    ("sdxl", "txt2img", "sd15", "it is a StableDiffusionPipeline checkpoint", "sd15"),
    ("wan_ti2v_5b", "txt2vid", "sd15", "it is a StableDiffusionPipeline checkpoint", "sd15"),
    ("wan_ti2v_5b", "txt2vid", "wan_t2v_14b", "it has two expert transformers (an A14B model)", "wan_t2v_14b"),
    ("wan_i2v_14b", "img2vid", "wan_t2v_14b", "it is a WanPipeline checkpoint", "wan_t2v_14b"),
    ("flux", "txt2img", "ltx_video", "it is a LTXPipeline checkpoint", "ltx_video"),
])
def test_a_folder_of_another_family_is_named_before_loading(engine, task, folder_of, what, fits, tmp_path):
    from codex_core.testing import tiny_model_dir, write_test_image

    folder = tmp_path / "model"  # a copy: the tiny folder itself would be taken as the tiny model
    import shutil

    shutil.copytree(tiny_model_dir(folder_of), folder)
    request = {"prompt": "x"}
    if task == "img2vid":
        request["init_image"] = write_test_image(tmp_path / "init.png", (32, 32))
    script = ("import json, sys; from codex_core.testing import cli_run; "
              f"r = cli_run(['run', {engine!r}, {task!r}, '--model', {str(folder)!r}, '--out', {str(tmp_path / 'out')!r},"
              f" '--json', {json.dumps(request)!r}]); "
              "print(json.dumps({'code': r.exit_code, 'err': r.stderr, 'torch': 'torch' in sys.modules}))")
    result = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                       env={**os.environ, "CODEX_CACHE_DIR": os.environ["CODEX_CACHE_DIR"]}).stdout)
    assert result["code"] == 2, result["err"]
    assert f"--model: {folder} is not a {engine} checkpoint: " in result["err"] and what in result["err"]
    assert f"engines that fit it: {fits}" in result["err"]
    assert not result["torch"]  # recognised from its configs: nothing was loaded
    assert not (tmp_path / "out").exists()


# -- input images: every mode, orientation, transparency, and what cannot be an image ---------------


def _image(path: Path, mode: str, size=(64, 48), value=None, **save) -> str:
    from PIL import Image

    image = Image.new(mode, size, value if value is not None else 0)
    image.save(path, **save)
    return str(path)


@pytest.mark.parametrize("mode, value, suffix, expected", [
    ("I;16", 32896, ".png", (128, 128, 128)),           # 16-bit: scaled by 1/257, not clipped to 255
    ("I", 65535, ".tiff", (255, 255, 255)),
    ("F", 0.5, ".tiff", (128, 128, 128)),              # float in [0, 1]: scaled by 255
    ("1", 1, ".png", (255, 255, 255)),
    ("L", 77, ".png", (77, 77, 77)),
    ("CMYK", (0, 255, 255, 0), ".tiff", (255, 0, 0)),
    ("RGB", (10, 20, 30), ".png", (10, 20, 30)),
])
def test_every_image_mode_becomes_rgb_by_its_meaning(tmp_path, mode, value, suffix, expected):
    from codex_core.images import open_image, prepare

    path = _image(tmp_path / f"in{suffix}", mode, value=value)
    image, notes = prepare(open_image(path))
    assert image.mode == "RGB" and image.size == (64, 48)
    assert image.getpixel((5, 5)) == expected, (mode, notes)


def test_transparency_is_flattened_onto_white_and_a_uniform_mask_uses_its_alpha(tmp_path):
    from PIL import Image

    from codex_core.images import open_image, prepare

    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (200, 10, 10, 255))
    rgba.save(tmp_path / "init.png")
    image, notes = prepare(open_image(str(tmp_path / "init.png")))
    assert image.getpixel((0, 0)) == (200, 10, 10) and image.getpixel((4, 4)) == (255, 255, 255)
    assert notes == {"mode": "RGBA", "alpha": "flattened onto white"}
    mask = Image.new("LA", (8, 8), (255, 0))
    mask.putpixel((1, 1), (255, 255))
    mask.save(tmp_path / "mask.png")
    image, notes = prepare(open_image(str(tmp_path / "mask.png")), mask=True)
    assert image.mode == "L" and image.getpixel((1, 1)) == 255 and image.getpixel((4, 4)) == 0
    assert notes["alpha"].startswith("used as the mask")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    image, notes = prepare(open_image(str(tmp_path / "palette.png")))
    assert image.getpixel((4, 4)) == (255, 255, 255) and notes["alpha"] == "flattened onto white"


def test_exif_orientation_is_applied_and_the_run_says_what_was_converted(tmp_path):
    from PIL import Image

    from codex_core.testing import run_json

    image = Image.new("RGB", (48, 32), (30, 60, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "photo.jpg", exif=exif)
    request = {"prompt": "x", "init_image": str(tmp_path / "photo.jpg"), "steps": 2, "seed": 1}
    result = run_json("sd15", "img2img", request, tmp_path / "out")
    assert Image.open(result["files"][0]).size == (32, 48)  # as a viewer shows it
    assert result["info"]["notes"]["converted"]["init_image"] == {"exif_orientation": 6}


def test_a_sixteen_bit_png_runs_end_to_end(tmp_path):
    from codex_core.testing import run_json

    path = _image(tmp_path / "deep.png", "I;16", value=40000)
    info = run_json("sd15", "img2img", {"prompt": "x", "init_image": path, "steps": 2, "seed": 1}, tmp_path / "out")["info"]
    assert info["notes"]["converted"]["init_image"]["scaled"].startswith("16-bit values to 8 bits")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: (tmp / "folder").mkdir() or str(tmp / "folder"), "is a folder, not an image file"),
    (lambda tmp: [(tmp / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"), str(tmp / "x.png")][1],
     "not a readable image"),
    (lambda tmp: _image(tmp / "wide.png", "L", size=(16392, 8)), "its width 16392 is over the largest output width, 16384"),
])
def test_images_that_cannot_run_are_refused_naming_the_field(tmp_path, make, message):
    path = make(tmp_path)
    err = run_usage_error(tmp_path, "--json", json.dumps({"prompt": "x", "init_image": path}),
                          task="img2img").replace("\n", " ")
    assert "init_image" in err and message in err


def test_an_upscale_over_the_largest_size_names_the_factor_and_the_limit(tmp_path):
    path = _image(tmp_path / "long.png", "RGB", size=(8192, 8))
    result = cli_run(["run", "sd15", "upscale", "--model", "tiny", "--out", str(tmp_path / "out"),
                      "--json", json.dumps({"prompt": "x", "init_image": path, "upscale_factor": 4.0})])
    assert result.exit_code == 2
    assert "upscale_factor: 4.0 turns the init image's width 8192 into 32768, over the largest output width, 16384" in (
        result.stderr)


def test_a_decompression_bomb_is_refused_naming_the_limit(tmp_path, monkeypatch):
    from PIL import Image

    from codex_core.params import Img2ImgParams, validate
    from codex_core.errors import ParamError

    path = _image(tmp_path / "big.png", "L", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over a limit of 1000
    with pytest.raises(ParamError, match="init_image: got .*decompression-bomb limit \\(1,000 pixels\\)"):
        validate(Img2ImgParams, {"prompt": "x", "init_image": path, "steps": 2, "cfg": 7.0, "strength": 0.5}, "e", "t")


# -- prompts longer than the text encoder's window ----------------------------------------------------


@pytest.mark.parametrize("engine, extra, tokenizer, kept", [
    # CLIP's 77 tokens; with the SD default "a1111" syntax long prompts are chunked instead (test_a1111_prompts.py)
    ("sd15", {"width": 32, "height": 32, "prompt_syntax": "plain"}, "tokenizer", 77),
    ("sdxl", {"width": 32, "height": 32, "prompt_syntax": "plain"}, "tokenizer_2", 77),
    ("flux", {"width": 32, "height": 32, "max_sequence_length": 16}, "tokenizer_2", 16),  # T5: the window asked for
])
def test_a_prompt_over_the_window_is_warned_about_and_recorded(tmp_path, engine, extra, tokenizer, kept):
    request = {"prompt": "a red fox " * 12, "steps": 1, "seed": 1, **extra}  # 120 characters: tokens of the tiny models
    result = cli_run(["run", engine, "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json",
                      json.dumps(request)])
    assert result.exit_code == 0, result.stderr
    truncated = json.loads(result.stdout)["info"]["notes"]["truncated"]["prompt"]
    assert truncated[tokenizer]["kept"] == kept and truncated[tokenizer]["tokens"] > kept
    assert f"warning: prompt has {truncated[tokenizer]['tokens']} tokens for {tokenizer}" in result.stderr


def test_a_prompt_within_the_window_has_no_note(tmp_path):
    from codex_core.testing import run_json

    assert "truncated" not in run_json("sd15", "txt2img", {**SMALL, "prompt": "a fox"}, tmp_path)["info"]["notes"]
