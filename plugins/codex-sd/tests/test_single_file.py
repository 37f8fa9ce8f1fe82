"""A1111/Civitai single-file checkpoints on sd15/sdxl: found by path or name, the variant read from the
file's keys, loaded offline with diffusers' from_single_file, and the same pixels as the diffusers folder."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from codex_core import read_safetensors_header
from codex_diffusers.testing.checkpoint_writers import write_sd_single_file
from codex_diffusers.testing import cli_run, pixels, run_json, tiny_model_dir
from codex_sd.detect import sd_checkpoint

pytestmark = pytest.mark.slow

REQUEST = {"prompt": "a lighthouse", "seed": 7, "width": 32, "height": 32, "steps": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {"sd15": write_sd_single_file(tiny_model_dir("sd15"), folder / "v15.safetensors", xl=False),
            "sdxl": write_sd_single_file(tiny_model_dir("sdxl"), folder / "xl.safetensors", xl=True)}


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
@pytest.mark.parametrize("task", ["txt2img", "img2img"])
def test_a_single_file_gives_the_pixels_of_the_folder_it_came_from(engine, task, files, tmp_path):
    request = dict(REQUEST)
    if task == "img2img":
        from codex_core.testing import write_test_image

        request = {**request, "init_image": write_test_image(tmp_path / "in.png", (32, 32)), "strength": 0.6}
        del request["width"], request["height"]
    folder = tiny_model_dir(engine)
    from_folder = run_json(engine, task, request, tmp_path / "a", str(folder))
    from_file = run_json(engine, task, request, tmp_path / "b", str(files[engine]), "--config", str(folder))
    assert np.array_equal(pixels(from_folder["files"][0]), pixels(from_file["files"][0]))
    model = from_file["info"]["model"]
    assert model["kind"] == "file" and model["config"] == str(folder)
    record = model["files"]["checkpoint"]
    assert record["hash"] == record["sha256"][:10] and model["fingerprint"]["sha256"] == record["sha256"]
    parameters = cli_run(["info", from_file["files"][0], "--parameters"]).stdout
    assert f"Model hash: {record['hash']}, Model: {files[engine].stem}" in parameters


def test_a_checkpoint_by_name_from_the_checkpoints_folder(files, tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "checkpoints" / "sd").mkdir(parents=True)
    (models / "checkpoints" / "sd" / "dreamy_v2.safetensors").write_bytes(files["sd15"].read_bytes())
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    result = run_json("sd15", "txt2img", REQUEST, tmp_path / "o", "dreamy_v2", "--config", str(tiny_model_dir("sd15")))
    assert result["info"]["model"]["path"].endswith("checkpoints/sd/dreamy_v2.safetensors")
    rows = {row["name"]: row for row in json.loads(cli_run(["models", "--json"]).stdout)}
    assert rows["sd/dreamy_v2"]["engines"] == ["sd15"] and rows["sd/dreamy_v2"]["kind"] == "checkpoints"


def test_without_config_the_shipped_configs_are_used_and_a_mismatch_says_to_pass_config(files, tmp_path):
    # the tiny file does not fit the real SD 1.5 configs the plugin ships: exit 2, naming --config
    result = cli_run(["run", "sd15", "txt2img", "--model", str(files["sd15"]), "--out", str(tmp_path / "o"),
                      "--json", json.dumps(REQUEST)])
    assert result.exit_code == 2, result.stderr
    assert "with the configs of" in result.stderr and "sd15-" in result.stderr and "--config" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("engine, other, fits", [("sd15", "sdxl", "sdxl"), ("sdxl", "sd15", "sd15")])
def test_a_file_of_the_other_family_is_refused_naming_the_engine_that_runs_it(engine, other, fits, files, tmp_path):
    result = cli_run(["run", engine, "txt2img", "--model", str(files[other]), "--json", json.dumps(REQUEST)])
    assert result.exit_code == 2
    assert f"is not a {engine} checkpoint" in result.stderr and f"engines that fit it: {fits}" in result.stderr


def test_pickle_checkpoints_need_allow_pickle_and_then_load_with_weights_only(files, tmp_path):
    ckpt = tmp_path / "v15.ckpt"
    torch.save({"state_dict": load_file(files["sd15"])}, ckpt)
    refused = cli_run(["run", "sd15", "txt2img", "--model", str(ckpt), "--json", json.dumps(REQUEST)])
    assert refused.exit_code == 2 and "--allow-pickle" in refused.stderr
    folder = tiny_model_dir("sd15")
    loaded = run_json("sd15", "txt2img", REQUEST, tmp_path / "a", str(ckpt), "--config", str(folder), "--allow-pickle")
    reference = run_json("sd15", "txt2img", REQUEST, tmp_path / "b", str(folder))
    assert np.array_equal(pixels(loaded["files"][0]), pixels(reference["files"][0]))


def test_config_must_be_a_diffusers_folder_and_only_for_single_files(files, tmp_path):
    bad = cli_run(["run", "sd15", "txt2img", "--model", str(files["sd15"]), "--config", str(tmp_path),
                   "--json", json.dumps(REQUEST)])
    assert bad.exit_code == 2 and "--config" in bad.stderr and "no model_index.json" in bad.stderr
    folder = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--config", str(tiny_model_dir("sd15")),
                      "--json", json.dumps(REQUEST)])
    assert folder.exit_code == 2 and "applies to a single-file checkpoint" in folder.stderr


def _shapes(**extra):
    return {"model.diffusion_model.input_blocks.0.0.weight": (320, extra.pop("channels", 4), 3, 3), **extra}


@pytest.mark.parametrize("shapes, variant", [
    (_shapes(**{"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)}), "sd15"),
    (_shapes(channels=9, **{"cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}),
     "sd15_inpaint"),
    (_shapes(**{"conditioner.embedders.0.transformer.text_model.x": (1,), "conditioner.embedders.1.model.x": (1,)}),
     "sdxl"),
    (_shapes(channels=9, **{"conditioner.embedders.1.model.ln_final.weight": (1280,)}), "sdxl_inpaint"),
    (_shapes(**{"cond_stage_model.model.ln_final.weight": (1024,)}), None),  # SD 2.x
    (_shapes(**{"conditioner.embedders.0.model.ln_final.weight": (1280,)}), None),  # SDXL refiner
    ({"lora_unet_x.lora_down.weight": (4, 320)}, None),
])
def test_the_variant_is_read_from_the_conditioner_keys_and_the_unet_input_channels(shapes, variant):
    assert sd_checkpoint(shapes)[0] == variant


def test_an_inpainting_file_serves_only_inpaint(tmp_path):
    # a header is enough: the engine refuses txt2img on it before any weight is read
    shapes = _shapes(channels=9, **{"cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)})
    header = {name: {"dtype": "F16", "shape": list(shape), "data_offsets": [0, 0]} for name, shape in shapes.items()}
    raw = json.dumps(header).encode()
    path = tmp_path / "inpaint.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    from codex_core import ModelSource, get_engine

    engine = get_engine("sd15")
    assert engine.file_variant(path) == "sd15_inpaint"
    assert list(engine.task_folders(ModelSource("file", path, str(path)))) == ["inpaint"]
    assert read_safetensors_header(path)  # well-formed


def test_replay_finds_a_moved_checkpoint_and_lora_by_their_hash(files, tmp_path, monkeypatch):
    from codex_diffusers.testing.checkpoint_writers import write_kohya_sd_lora

    first = tmp_path / "first"
    (first / "checkpoints").mkdir(parents=True)
    checkpoint = first / "checkpoints" / "dreamy.safetensors"
    checkpoint.write_bytes(files["sd15"].read_bytes())
    lora = write_kohya_sd_lora(tiny_model_dir("sd15"), first / "loras" / "ink.safetensors", seed=5)
    monkeypatch.setenv("CODEX_MODELS_DIR", str(first))
    original = run_json("sd15", "txt2img", {**REQUEST, "loras": [{"name": "ink", "scale": 0.6}]},
                        tmp_path / "out", "dreamy", "--config", str(tiny_model_dir("sd15")))
    # another install: the same files under other names
    second = tmp_path / "second"
    (second / "checkpoints").mkdir(parents=True)
    (second / "loras").mkdir(parents=True)
    checkpoint.rename(second / "checkpoints" / "renamed.safetensors")
    lora.rename(second / "loras" / "ink-v2.safetensors")
    (second / "loras" / "ink.safetensors").write_bytes(b"")  # a different file under the old name
    monkeypatch.setenv("CODEX_MODELS_DIR", str(second))
    result = cli_run(["replay", original["files"][0], "--check", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.stderr
    assert "the checkpoint" in result.stderr and "renamed.safetensors" in result.stderr
    assert "loras[0]" in result.stderr and "ink-v2.safetensors" in result.stderr
    assert json.loads(result.stdout)["check"]["identical"] is True


@pytest.mark.parametrize("shapes, message", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320),
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4)},
     "it is a LoRA, not a checkpoint; pass it in the request's loras"),
    (_shapes(**{"cond_stage_model.model.ln_final.weight": (1024,)}), "it is an SD 2.x checkpoint"),
    ({"blocks.0.self_attn.q.weight": (24, 24)}, "not a whole SD/SDXL checkpoint"),
])
def test_a_file_no_engine_runs_as_a_checkpoint_exits_2_saying_what_it_is(shapes, message, tmp_path):
    header = {name: {"dtype": "F16", "shape": list(shape), "data_offsets": [0, 0]} for name, shape in shapes.items()}
    raw = json.dumps(header).encode()
    path = tmp_path / "file.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    result = cli_run(["run", "sd15", "txt2img", "--model", str(path), "--out", str(tmp_path / "o"),
                      "--json", json.dumps(REQUEST)])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()
