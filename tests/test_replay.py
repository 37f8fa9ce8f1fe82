"""Reproducibility: info records what decides the pixels, `codex replay` makes them again, `--check` proves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from codex_core.fingerprint import model_fingerprint
from codex_core.testing import cli_run, run_json, tiny_model_dir, write_test_image

SD_REQUEST = {"prompt": "a red fox in snow", "negative_prompt": "blurry", "width": 64, "height": 48, "steps": 2,
              "seed": 42, "batch_size": 2}
WAN_REQUEST = {"prompt": "a red fox running in snow", "negative_prompt": "blurry", "width": 64, "height": 32,
               "num_frames": 5, "steps": 2, "seed": 42}


def replay(target: Path, out: Path, *extra: str):
    result = cli_run(["replay", str(target), "--out", str(out), "--quiet", *extra])
    data = json.loads(result.stdout) if result.stdout.strip() else None
    return result, data


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd")
    return run_json("sd15", "txt2img", SD_REQUEST, out / "runs")


def test_info_records_what_decides_the_pixels(sd_run):
    info = sd_run["info"]
    assert info["request"]["seed"] == 42 and info["request"]["sampler"]  # the effective request
    assert info["scheduler_class"] == "DPMSolverMultistepScheduler"  # the preset's DPM++ 2M Karras
    assert info["scheduler_config"]["use_karras_sigmas"] is True
    assert info["scheduler_config"]["num_train_timesteps"] == 1000
    json.dumps(info["scheduler_config"], allow_nan=False)  # JSON-safe
    fingerprint = info["model"]["fingerprint"]
    assert fingerprint == model_fingerprint(tiny_model_dir("sd15"))
    assert len(fingerprint["sha256"]) == 64 and fingerprint["files"] > 0 and fingerprint["bytes"] > 0
    assert info["model"]["label"] == "tiny" and info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["formats"] == ["png"] and info["versions"]["torch"]
    run_dir = Path(sd_run["run_dir"])
    for target in (run_dir / "info.json", run_dir / "0000.png", run_dir):
        shown = json.loads(cli_run(["info", str(target)]).stdout)
        shown = shown.get("codex", shown)
        assert shown["request"] == info["request"] and shown["scheduler_config"] == info["scheduler_config"]


@pytest.mark.parametrize("target", ["0001.png", "info.json", "."])
def test_replay_is_identical(sd_run, tmp_path, target):
    original = Path(sd_run["run_dir"])
    result, data = replay(original / target, tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    check = data["check"]
    assert check["identical"] is True and check["max_pixel_difference"] == 0
    assert check["compared"] == 2  # the whole batch: a PNG in its run folder replays the run
    info = data["info"]
    assert info["request"] == sd_run["info"]["request"] and info["seed_source"] == "request"
    assert info["replay_of"]["run_id"] == sd_run["info"]["run_id"]
    assert info["replay_of"]["model_fingerprint_matches"] is True
    assert Path(data["run_dir"]).parent == tmp_path / "again"


def test_replay_of_a_png_on_its_own(sd_run, tmp_path):
    lone = tmp_path / "lone.png"
    shutil.copy(Path(sd_run["run_dir"]) / "0001.png", lone)  # no info.json beside it: the PNG chunk is enough
    result, data = replay(lone, tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    assert data["check"] == {"identical": True, "max_pixel_difference": 0, "compared": 1, "differing": 0,
                             "what": "images"}


def test_tampered_request_is_reported_different(sd_run, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(sd_run["run_dir"], tampered)
    info = json.loads((tampered / "info.json").read_text())
    info["request"]["seed"] = 43
    (tampered / "info.json").write_text(json.dumps(info))
    result, data = replay(tampered / "info.json", tmp_path / "again", "--check")
    assert result.exit_code == 1
    assert data["check"]["identical"] is False and data["check"]["max_pixel_difference"] > 0
    assert data["check"]["compared"] == 2 and data["check"]["differing"] == 2
    assert "replay check: DIFFERENT" in result.stderr


def test_img2img_replay_is_identical(tmp_path):
    init = write_test_image(tmp_path / "init.png", (64, 64), seed=1)
    request = {"prompt": "a fox, winter", "init_image": init, "strength": 0.6, "steps": 3, "seed": 7,
               "sampler": "Euler a"}
    first = run_json("sd15", "img2img", request, tmp_path / "runs")
    result, data = replay(Path(first["run_dir"]) / "0000.png", tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    assert data["check"]["identical"] and data["check"]["compared"] == 1
    assert data["info"]["request"]["init_image"] == init and data["info"]["scheduler_class"] == "EulerAncestralDiscreteScheduler"


def test_changed_model_warns(sd_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("sd15"), model)
    first = run_json("sd15", "txt2img", {**SD_REQUEST, "batch_size": 1}, tmp_path / "runs", str(model))
    assert first["info"]["model"]["kind"] == "folder"
    assert first["info"]["model"]["fingerprint"]["sha256"] == sd_run["info"]["model"]["fingerprint"]["sha256"]
    index = model / "model_index.json"
    index.write_text(index.read_text() + "\n")  # same model, different bytes: the fingerprint notices
    result = cli_run(["replay", first["run_dir"], "--out", str(tmp_path / "again"), "--check"])
    assert result.exit_code == 0, result.stderr
    assert "the model differs from the one run" in result.stderr
    data = json.loads(result.stdout)
    assert data["info"]["replay_of"]["model_fingerprint_matches"] is False
    assert data["info"]["model"]["path"] == str(model.resolve())


def test_fingerprint_is_cheap_and_notices_changes(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"a": 1}')
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("ignored")
    first = model_fingerprint(tmp_path)
    assert first["files"] == 2 and first["bytes"] == 108
    assert model_fingerprint(tmp_path) == first
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"y" * 100)  # same name and size
    assert model_fingerprint(tmp_path)["sha256"] == first["sha256"]  # weights are never read
    (tmp_path / "unet" / "config.json").write_text('{"a": 2}')
    assert model_fingerprint(tmp_path)["sha256"] != first["sha256"]
    assert model_fingerprint(tmp_path / "missing") is None


def test_video_replay_is_identical(tmp_path):
    first = run_json("wan_ti2v_5b", "txt2vid", WAN_REQUEST, tmp_path / "runs", "tiny", "--format", "frames,mp4")
    run_dir = Path(first["run_dir"])
    assert first["info"]["formats"] == ["frames", "mp4"] and first["info"]["scheduler_config"]
    for target in (run_dir / "info.json", run_dir / "video.mp4"):
        shown = json.loads(cli_run(["info", str(target)]).stdout)
        assert shown.get("codex", shown)["request"] == first["info"]["request"]
    # from the run folder: frames/ PNGs compared one by one
    result, data = replay(run_dir, tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    assert data["check"]["identical"] and data["check"]["compared"] == 5 and data["check"]["what"] == "frames"
    assert data["info"]["formats"] == ["frames", "mp4"]
    # an MP4 on its own: its comment tag is the record, decoded frames are compared
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run_dir / "video.mp4", lone / "video.mp4")
    result, data = replay(lone / "video.mp4", tmp_path / "again2", "--check")
    assert result.exit_code == 0, result.stderr
    assert data["check"]["identical"] and data["check"]["compared"] == 5 and data["check"]["what"] == "mp4 frames"


def test_info_records_each_input_file_with_its_sha256_and_the_working_folder(tmp_path):
    import hashlib

    init = write_test_image(tmp_path / "init.png", (32, 32), seed=1)
    info = run_json("sd15", "img2img", {"prompt": "x", "init_image": init, "steps": 2, "seed": 1},
                    tmp_path / "runs")["info"]
    assert info["inputs"] == {"init_image": {"path": init, "bytes": Path(init).stat().st_size,
                                             "sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest()}}
    assert info["cwd"] == str(Path.cwd())


def test_a_relative_input_is_found_as_the_original_run_found_it(tmp_path, monkeypatch):
    first_dir, other_dir = tmp_path / "first", tmp_path / "other"
    first_dir.mkdir(), other_dir.mkdir()
    write_test_image(first_dir / "in.png", (32, 32), seed=3)
    monkeypatch.chdir(first_dir)
    first = run_json("sd15", "img2img", {"prompt": "x", "init_image": "in.png", "steps": 2, "seed": 1},
                     tmp_path / "runs")
    assert first["info"]["request"]["init_image"] == "in.png"  # the request as given
    write_test_image(other_dir / "in.png", (32, 32), seed=4)  # another image of that name elsewhere
    monkeypatch.chdir(other_dir)
    result, data = replay(Path(first["run_dir"]), tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    assert data["check"]["identical"] and "warning" not in result.stderr


def test_a_changed_input_is_warned_about_and_named_by_check(tmp_path):
    init = write_test_image(tmp_path / "init.png", (32, 32), seed=1)
    first = run_json("sd15", "img2img", {"prompt": "x", "init_image": init, "steps": 2, "seed": 1, "strength": 0.9},
                     tmp_path / "runs")
    write_test_image(tmp_path / "init.png", (32, 32), seed=2)  # same name and size, other pixels
    result = cli_run(["replay", first["run_dir"], "--out", str(tmp_path / "again"), "--check"])
    assert result.exit_code == 1
    assert (f"warning: input init_image ({init}) has changed (sha256) since run {first['info']['run_id']}"
            in result.stderr)
    check = json.loads(result.stdout)["check"]
    assert [c["field"] for c in check["changed_inputs"]] == ["init_image"]
    assert "the input init_image" in result.stderr and "is not what the original run read" in result.stderr


def test_an_edit_replays_identically_from_another_folder_and_a_changed_reference_is_named(tmp_path, monkeypatch):
    """An edit's reference images (a list of input files) are recorded one by one (images.0, images.1), found again
    as the original run found them, and a changed one is named by --check."""
    first_dir, other_dir = tmp_path / "first", tmp_path / "other"
    first_dir.mkdir(), other_dir.mkdir()
    write_test_image(first_dir / "a.png", (64, 64), seed=3)
    write_test_image(first_dir / "b.png", (64, 64), seed=4)
    monkeypatch.chdir(first_dir)
    request = {"prompt": "x", "images": ["a.png", "b.png"], "steps": 2, "seed": 1, "max_sequence_length": 16}
    first = run_json("flux2_klein", "edit", request, tmp_path / "runs")
    assert sorted(first["info"]["inputs"]) == ["images.0", "images.1"]
    monkeypatch.chdir(other_dir)  # relative names that do not exist here: the recorded paths are used
    result, data = replay(Path(first["run_dir"]), tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    assert first["info"]["request"]["images"] == ["a.png", "b.png"]  # the request as given
    assert data["check"]["identical"] and data["info"]["request"]["images"] == [str(first_dir / "a.png"),
                                                                               str(first_dir / "b.png")]
    write_test_image(first_dir / "b.png", (64, 64), seed=5)  # the second reference changes
    result, data = replay(Path(first["run_dir"]), tmp_path / "again", "--check")
    assert result.exit_code == 1 and [c["field"] for c in data["check"]["changed_inputs"]] == ["images.1"]


# -- a batch's seeds: A1111's seed + i, and the replay of runs recorded before that rule ------------------------

def test_image_i_of_a_batch_equals_a_one_image_run_with_seed_plus_i(sd_run, tmp_path):
    from codex_core import read_info

    info = sd_run["info"]
    assert info["seeds"] == [42, 43] and info["seed"] == 42
    for index, path in enumerate(sorted(p for p in sd_run["files"] if p.endswith(".png"))):
        assert f"Seed: {42 + index}," in read_info(Path(path))["parameters"]
        single = run_json("sd15", "txt2img", {**info["request"], "batch_size": 1, "seed": 42 + index},
                          tmp_path / f"single{index}")
        assert single["info"]["seeds"] == [42 + index]
        assert np.array_equal(_pixels(path), _pixels(single["files"][0])), index


def test_a_run_recorded_without_seeds_replays_with_one_generator_for_the_batch(sd_run, tmp_path):
    """info.json from before the seed + i rule has no ``seeds``: its batch came from one generator of the seed,
    and its replay draws it so again (the ``shared`` rule, which is what those runs ran)."""
    from codex_core.orchestrator import RunOptions, run

    old = run("sd15", "txt2img", SD_REQUEST, RunOptions(model="tiny", out=tmp_path / "old", quiet=True,
                                                          seed_rule="shared"))
    assert "seeds" not in old.info  # as runs recorded before the rule
    pngs = sorted(p for p in old.files if p.suffix == ".png")
    new = sorted(p for p in sd_run["files"] if p.endswith(".png"))
    assert np.array_equal(_pixels(pngs[0]), _pixels(new[0]))  # image 0: the same noise
    assert not np.array_equal(_pixels(pngs[1]), _pixels(new[1]))  # image 1: one generator's second draw, not 43's
    result, data = replay(old.run_dir / "info.json", tmp_path / "again", "--check")
    assert result.exit_code == 0, result.stderr
    assert data["check"]["identical"] and data["check"]["compared"] == 2
    assert "seeds" not in data["info"]  # replayed by the old rule, and recorded so: its own replay agrees


def _pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
