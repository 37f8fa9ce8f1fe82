"""The models folders: layouts, the config file's extra roots, names, headers, hashes and `codex models`."""

import hashlib
import json
import struct

import pytest

from codex_core import model_files
from codex_core.errors import UsageError
from codex_core.testing import cli_run


def write_safetensors(path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid .safetensors file (zero bytes for data) with these tensor names, dtypes and shapes."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = 2 if dtype == "F16" else 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


# A LoRA header as kohya writes them for SD 1.x (768-wide cross-attention) and SDXL (2048).
def kohya_lora(path, context: int) -> None:
    block = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    write_safetensors(path, {f"{block}.lora_down.weight": ("F16", [4, context]),
                             f"{block}.lora_up.weight": ("F16", [320, 4]), f"{block}.alpha": ("F16", [])})


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An empty codex models dir, an A1111 install and a ComfyUI install, the latter two from a config file."""
    codex, a1111, comfy = tmp_path / "models", tmp_path / "webui", tmp_path / "ComfyUI"
    config = tmp_path / "codex.yaml"
    config.write_text(f"models:\n  roots:\n    - {{path: {a1111}, layout: a1111}}\n"
                      f"    - {{path: {comfy}, layout: comfyui}}\n  loras: [{tmp_path / 'extra-loras'}]\n")
    monkeypatch.setenv("CODEX_MODELS_DIR", str(codex))
    monkeypatch.setenv("CODEX_CONFIG", str(config))
    return {"codex": codex, "a1111": a1111, "comfyui": comfy, "extra": tmp_path / "extra-loras", "config": config}


def test_each_layout_puts_each_kind_where_its_tool_does(roots):
    kohya_lora(roots["codex"] / "loras" / "mine.safetensors", 768)
    kohya_lora(roots["a1111"] / "models" / "Lora" / "style" / "ink.safetensors", 768)
    kohya_lora(roots["a1111"] / "models" / "LyCORIS" / "loha.safetensors", 768)
    kohya_lora(roots["comfyui"] / "models" / "loras" / "comfy.safetensors", 2048)
    kohya_lora(roots["extra"] / "extra.safetensors", 2048)
    write_safetensors(roots["a1111"] / "models" / "VAE" / "vae-ft-mse.safetensors", {"decoder.x": ("F16", [1])})
    write_safetensors(roots["comfyui"] / "models" / "unet" / "wan.safetensors", {"blocks.0.x": ("F16", [1])})
    (roots["a1111"] / "embeddings").mkdir(parents=True)
    (roots["a1111"] / "embeddings" / "bad-hands.pt").write_bytes(b"pickle")
    names = {(f.kind, f.name, f.format) for f in model_files.scan()}
    assert names == {("loras", "mine", "safetensors"), ("loras", "style/ink", "safetensors"),
                     ("loras", "loha", "safetensors"), ("loras", "comfy", "safetensors"),
                     ("loras", "extra", "safetensors"), ("vae", "vae-ft-mse", "safetensors"),
                     ("diffusion_models", "wan", "safetensors"), ("embeddings", "bad-hands", "pickle")}


def test_a_name_is_its_path_under_the_kind_folder_or_its_unique_stem(roots):
    kohya_lora(roots["a1111"] / "models" / "Lora" / "style" / "ink.safetensors", 768)
    assert model_files.find("loras", "style/ink", "loras").path.name == "ink.safetensors"
    assert model_files.find("loras", "ink", "loras").name == "style/ink"
    kohya_lora(roots["codex"] / "loras" / "ink.safetensors", 768)  # an exact name wins over a stem
    assert model_files.find("loras", "ink", "loras").name == "ink"
    (roots["codex"] / "loras" / "ink.safetensors").unlink()
    kohya_lora(roots["comfyui"] / "models" / "loras" / "other" / "ink.safetensors", 768)
    with pytest.raises(UsageError, match="matches several loras files"):
        model_files.find("loras", "ink", "loras")
    with pytest.raises(UsageError, match="no loras file named 'nope'"):
        model_files.find("loras", "nope", "loras")


@pytest.mark.parametrize("text, message", [
    ("models:\n  roots:\n    - {path: /x, layout: invokeai}\n", "layout: 'invokeai' is not a known layout"),
    ("models:\n  checkpoint: [/x]\n", "unknown setting models.checkpoint"),
    ("models: [1, 2]\n", "models must be a mapping"),
    ("models:\n  roots:\n    - /x\n", "expected {path: DIR"),
    ("models: {roots: [}\n", "not valid YAML"),
])
def test_a_bad_config_file_is_an_error_naming_the_file_and_the_setting(tmp_path, monkeypatch, text, message):
    config = tmp_path / "codex.yaml"
    config.write_text(text)
    monkeypatch.setenv("CODEX_CONFIG", str(config))
    result = cli_run(["models", "--no-hash"])
    assert result.exit_code == 2
    assert str(config) in result.stderr and message in result.stderr


def test_codex_models_lists_kind_family_engines_size_and_the_a1111_hash(roots):
    lora = roots["comfyui"] / "models" / "loras" / "xl-detail.safetensors"
    kohya_lora(lora, 2048)
    kohya_lora(roots["codex"] / "loras" / "v15-detail.safetensors", 768)
    rows = {row["name"]: row for row in json.loads(cli_run(["models", "--json"]).stdout)}
    sha = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert rows["xl-detail"]["hash"] == sha[:10]  # A1111's "Model hash": the first 10 hex digits of the sha256
    assert rows["xl-detail"]["engines"] == ["sdxl"] and rows["xl-detail"]["family"] == "stable-diffusion-xl"
    assert rows["v15-detail"]["engines"] == ["sd15"]
    assert rows["xl-detail"]["bytes"] == lora.stat().st_size
    only = json.loads(cli_run(["models", "--json", "--engine", "sd15"]).stdout)
    assert [row["name"] for row in only] == ["v15-detail"]
    table = cli_run(["models"]).stdout
    assert "xl-detail" in table and sha[:10] in table
    assert cli_run(["models", "--engine", "nope"]).exit_code == 2


def test_a_hash_is_computed_once_and_cached_by_path_size_and_mtime(roots, monkeypatch):
    lora = roots["codex"] / "loras" / "a.safetensors"
    kohya_lora(lora, 768)
    first = model_files.file_sha256(lora)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert model_files.file_sha256(lora) == first and calls == []
    kohya_lora(lora, 2048)  # new content, new size: hashed again
    assert model_files.file_sha256(lora) != first and calls == [1]


@pytest.mark.parametrize("content, why", [
    (b"abc", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 10**9) + b"{}", "header length 1000000000 exceeds the file"),
    (struct.pack("<Q", 4) + b"nope", "header is not JSON"),
    (struct.pack("<Q", 2) + b"[]", "header is not a JSON object"),
    (struct.pack("<Q", 62) + b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}' + b"\0" * 8,
     "tensors end at byte 86, the file has 78"),  # cut short: 8 of the tensor's 16 bytes
])
def test_a_corrupt_safetensors_header_is_a_usage_error_before_anything_loads(tmp_path, content, why):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(UsageError, match="not a valid safetensors file") as caught:
        model_files.read_safetensors_header(bad, "--model")
    assert why in caught.value.message
    result = cli_run(["run", "sd15", "txt2img", "--model", str(bad), "--json", '{"prompt": "x"}'])
    assert result.exit_code == 2 and "--model" in result.stderr and why in result.stderr


def test_codex_models_roots_shows_every_folder_and_where_it_is_configured(roots):
    rows = json.loads(cli_run(["models", "--roots", "--json"]).stdout)
    folders = {(row["kind"], row["folder"]) for row in rows}
    assert ("loras", str(roots["a1111"] / "models" / "Lora")) in folders
    assert ("checkpoints", str(roots["comfyui"] / "models" / "checkpoints")) in folders
    assert ("loras", str(roots["extra"])) in folders
    assert any(str(roots["config"]) in row["origin"] for row in rows)
