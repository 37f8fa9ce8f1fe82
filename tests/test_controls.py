"""The controls request field (ControlSpec, ControlFields) checked before anything loads, its image recorded and
found again as an input file, and the models-folder kinds controlnet, annotators and clip_vision."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from PIL import Image

from codex_core import MAX_CONTROLS, ControlFields, ControlSpec, ParamError, Txt2ImgParams, validate_params
from codex_core import model_files
from codex_core.orchestrator import input_records
from codex_core.params import input_files
from codex_core.replay import request_with_inputs
from codex_core.testing import cli_run


class ControlledParams(ControlFields, Txt2ImgParams):
    """What an engine's txt2img params with ControlNets look like."""


BASE = {"prompt": "a house", "steps": 2, "cfg": 5.0, "width": 64, "height": 64}


@pytest.fixture
def pictures(tmp_path) -> dict[str, str]:
    made = {}
    for name, colour in (("pose", (255, 255, 255)), ("edges", (0, 0, 0))):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        made[name] = str(path)
    (tmp_path / "notes.png").write_text("not a picture")
    made["not_an_image"] = str(tmp_path / "notes.png")
    return made


def check(controls: list[dict]) -> ControlledParams:
    return validate_params(ControlledParams, {**BASE, "controls": controls}, "engine", "txt2img")


def problems(controls: list[dict]) -> list[str]:
    with pytest.raises(ParamError) as caught:
        check(controls)
    assert caught.value.exit_code == 2
    return caught.value.problems


def test_a_control_has_a1111s_defaults_and_several_stack(pictures):
    params = check([{"model": "canny-v11", "image": pictures["edges"]},
                    {"model": "union", "image": pictures["pose"], "type": "pose", "scale": 0.5, "start": 0.1,
                     "end": 0.6}])
    first, second = params.controls
    assert (first.scale, first.start, first.end, first.type, first.preprocess, first.preprocess_params) == \
        (1.0, 0.0, 1.0, None, None, {})
    assert (second.model, second.type, second.scale, second.start, second.end) == ("union", "pose", 0.5, 0.1, 0.6)
    assert validate_params(ControlledParams, BASE, "engine", "txt2img").controls == []


def test_each_control_image_is_an_input_file_recorded_and_found_again_by_replay(pictures, tmp_path):
    params = check([{"model": "a", "image": pictures["edges"]}, {"model": "b", "image": pictures["pose"]}])
    assert input_files(params) == {"controls.0.image": pictures["edges"], "controls.1.image": pictures["pose"]}
    records = input_records(params)
    assert set(records) == {"controls.0.image", "controls.1.image"} and len(records["controls.1.image"]["sha256"]) == 64
    # a replay from another folder reads the files where the run found them
    controls = [{"model": "a", "image": "edges.png"}, {"model": "b", "image": "pose.png"}]
    info = {"request": {**BASE, "controls": controls}, "inputs": records}
    replayed = request_with_inputs(info)
    assert [c["image"] for c in replayed["controls"]] == [str(Path(pictures["edges"]).resolve()),
                                                          str(Path(pictures["pose"]).resolve())]


def test_a_preprocessor_is_recorded_with_its_defaults_filled_in(pictures):
    [control] = check([{"model": "c", "image": pictures["pose"], "preprocess": "canny",
                        "preprocess_params": {"low_threshold": 50}}]).controls
    assert control.preprocess_settings() == {"low_threshold": 50, "high_threshold": 200}
    [plain] = check([{"model": "c", "image": pictures["pose"]}]).controls
    assert plain.preprocess_settings() == {}


@pytest.mark.parametrize("control, message", [
    ({"start": 0.8, "end": 0.2}, "controls.0.start: got 0.8: 0.8 is after end (0.2); start must be <= end"),
    ({"preprocess": "edges"}, "controls.0.preprocess: got 'edges': unknown preprocessor 'edges'; known: blur, canny"),
    ({"preprocess": "canny", "preprocess_params": {"low_threshold": 300}},
     "controls.0.preprocess_params.low_threshold: got 300: Input should be less than or equal to 255"),
    ({"preprocess": "canny", "preprocess_params": {"high": 3}},
     "controls.0.preprocess_params.high: got 3: canny has no such parameter; its parameters: low_threshold, "
     "high_threshold"),
    ({"preprocess": "canny", "preprocess_params": {"low_threshold": 250}},
     "low_threshold 250 is above high_threshold 200"),
    ({"preprocess_params": {"low_threshold": 50}}, "controls.0.preprocess_params: got {'low_threshold': 50}: given "
                                                   "without preprocess"),
    ({"scale": 2.5}, "controls.0.scale: got 2.5: Input should be less than or equal to 2"),
    ({"start": -0.1}, "controls.0.start: got -0.1: Input should be greater than or equal to 0"),
    ({"end": 1.5}, "controls.0.end: got 1.5: Input should be less than or equal to 1"),
    ({"model": ""}, "controls.0.model: got '': String should have at least 1 character"),
    ({"image": "{missing}"}, "controls.0.image: got '{missing}': no such image file"),
    ({"image": "{not_an_image}"}, "controls.0.image: got '{not_an_image}': '{not_an_image}' is not a readable image"),
    ({"weight": 1.0}, "controls.0.weight: unknown field"),
    ({"scale": "1"}, "controls.0.scale: got '1': Input should be a valid number"),
])
def test_a_bad_control_is_refused_before_loading_naming_its_field(pictures, tmp_path, control, message):
    def named(text):
        return text.replace("{missing}", str(tmp_path / "nope.png")).replace("{not_an_image}", pictures["not_an_image"])

    item = {"model": "c", "image": pictures["pose"], **{k: named(v) if isinstance(v, str) else v
                                                        for k, v in control.items()}}
    found = problems([{"model": "ok", "image": pictures["edges"]}, item])  # the second item is named, not the first
    assert len(found) == 1 and named(message).replace("controls.0", "controls.1") in found[0], found


def test_an_annotator_whose_weights_are_missing_is_refused_naming_the_file(pictures, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    [problem] = problems([{"model": "c", "image": pictures["pose"], "preprocess": "hed"}])
    assert problem.startswith("controls.0.preprocess: got 'hed': hed needs the annotator weights "
                              "'ControlNetHED.pth'")
    assert f"put ControlNetHED.pth in {tmp_path / 'models' / 'annotators'}" in problem
    weights = tmp_path / "models" / "annotators" / "hed" / "ControlNetHED.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights")
    assert check([{"model": "c", "image": pictures["pose"], "preprocess": "hed"}]).controls[0].preprocess == "hed"


def test_at_most_max_controls(pictures):
    [problem] = problems([{"model": "c", "image": pictures["pose"]}] * (MAX_CONTROLS + 1))
    assert problem.startswith("controls: got") and f"at most {MAX_CONTROLS} items" in problem


def test_the_schema_offers_an_image_upload_for_each_control():
    schema = ControlledParams.model_json_schema()
    spec = schema["$defs"]["ControlSpec"]
    assert schema["properties"]["controls"]["items"] == {"$ref": "#/$defs/ControlSpec"}
    assert spec["properties"]["image"]["x-codex-input"] == "image"
    assert (spec["properties"]["scale"]["minimum"], spec["properties"]["scale"]["maximum"]) == (0.0, 2.0)
    assert ControlSpec.model_fields["end"].default == 1.0


# -- the models folders ----------------------------------------------------------------------------


def write_safetensors(path: Path, names: list[str]) -> None:
    """A valid .safetensors file: one two-byte F16 tensor per name."""
    header = {name: {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]} for i, name in enumerate(names)}
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (2 * len(names)))


CONTROLNET = ["controlnet_cond_embedding.conv_in.weight"]
IMAGE_ENCODER = ["vision_model.embeddings.patch_embedding.weight"]


@pytest.fixture
def installs(tmp_path, monkeypatch):
    """A codex models dir, and A1111, Forge and ComfyUI installs from a config file, each with a ControlNet, an
    annotator's weights and an image encoder where its tool keeps them."""
    root = {"codex": tmp_path / "models", "a1111": tmp_path / "webui", "forge": tmp_path / "forge",
            "comfyui": tmp_path / "ComfyUI"}
    config = tmp_path / "codex.yaml"
    config.write_text("models:\n  roots:\n" + "".join(f"    - {{path: {root[layout]}, layout: {layout}}}\n"
                                                       for layout in ("a1111", "forge", "comfyui")))
    monkeypatch.setenv("CODEX_MODELS_DIR", str(root["codex"]))
    monkeypatch.setenv("CODEX_CONFIG", str(config))
    files = {
        ("codex", "controlnet", "canny"): "controlnet/canny.safetensors",
        ("codex", "annotators", "midas/dpt_hybrid-midas-501f0c75"): "annotators/midas/dpt_hybrid-midas-501f0c75.pt",
        ("codex", "clip_vision", "vit-h"): "clip_vision/vit-h.safetensors",
        ("a1111", "controlnet", "control_v11p_sd15_openpose"):
            "models/ControlNet/control_v11p_sd15_openpose.safetensors",
        ("a1111", "annotators", "openpose/body_pose_model"):
            "extensions/sd-webui-controlnet/annotator/downloads/openpose/body_pose_model.pth",
        ("a1111", "clip_vision", "clip_h"): "extensions/sd-webui-controlnet/annotator/clip_vision/clip_h.safetensors",
        ("forge", "controlnet", "union-xl"): "models/ControlNet/union-xl.safetensors",
        ("forge", "annotators", "lineart/sk_model"): "models/ControlNetPreprocessor/lineart/sk_model.pth",
        ("comfyui", "controlnet", "depth-xl"): "models/controlnet/depth-xl.safetensors",
        ("comfyui", "annotators", "lllyasviel/Annotators/ControlNetHED"):
            "custom_nodes/comfyui_controlnet_aux/ckpts/lllyasviel/Annotators/ControlNetHED.pth",
        ("comfyui", "clip_vision", "clip-vit-large"): "models/clip_vision/clip-vit-large.safetensors",
    }
    for (layout, kind, _), relative in files.items():
        path = root[layout] / relative
        if path.suffix == ".safetensors":
            write_safetensors(path, IMAGE_ENCODER if kind == "clip_vision" else CONTROLNET)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"annotator weights")
    return {(kind, name): root[layout] / relative for (layout, kind, name), relative in files.items()}


def test_codex_models_lists_controlnets_annotators_and_image_encoders_of_every_layout(installs):
    result = cli_run(["models", "--json", "--no-hash"])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    listed = {(row["kind"], row["name"]): Path(row["path"]) for row in rows}
    assert listed == installs
    # no engine runs these files by itself, and an annotator's .pth is not offered as an --allow-pickle model
    assert all(row["engines"] == [] and row["problem"] is None for row in rows)
    only = json.loads(cli_run(["models", "--json", "--no-hash", "--kind", "controlnet"]).stdout)
    assert {row["name"] for row in only} == {"canny", "control_v11p_sd15_openpose", "union-xl", "depth-xl"}
    table = cli_run(["models", "--no-hash", "--kind", "clip_vision"]).stdout
    assert table.splitlines()[1].split()[:2] == ["clip_vision", "vit-h"]


def test_codex_models_roots_shows_the_new_kinds_folders(installs, tmp_path):
    rows = json.loads(cli_run(["models", "--roots", "--json"]).stdout)
    folders = {(row["layout"], row["kind"], row["folder"]) for row in rows}
    assert ("a1111", "controlnet", str(tmp_path / "webui" / "models" / "ControlNet")) in folders
    assert ("comfyui", "controlnet", str(tmp_path / "ComfyUI" / "models" / "controlnet")) in folders
    assert ("forge", "annotators", str(tmp_path / "forge" / "models" / "ControlNetPreprocessor")) in folders
    assert ("codex", "clip_vision", str(tmp_path / "models" / "clip_vision")) in folders


def test_a_controlnet_name_resolves_in_its_kind_and_an_annotator_by_its_file_name(installs):
    assert model_files.find("controlnet", "control_v11p_sd15_openpose", "controls.0.model").path == \
        installs[("controlnet", "control_v11p_sd15_openpose")]
    assert model_files.lookup("annotators", "body_pose_model.pth", "preprocess").path == \
        installs[("annotators", "openpose/body_pose_model")]
    assert model_files.lookup("controlnet", "vit-h", "controls.0.model") is None  # another kind's file


def test_a_config_file_may_add_folders_of_the_new_kinds(tmp_path, monkeypatch):
    extra = tmp_path / "more-controlnets"
    write_safetensors(extra / "tile.safetensors", CONTROLNET)
    config = tmp_path / "codex.yaml"
    config.write_text(f"models:\n  controlnet: [{extra}]\n")
    monkeypatch.setenv("CODEX_CONFIG", str(config))
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    assert [(f.kind, f.name) for f in model_files.scan(["controlnet"])] == [("controlnet", "tile")]
