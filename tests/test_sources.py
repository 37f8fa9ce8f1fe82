"""Where models come from: --model, env var, models dir, local hub cache; never the network."""

import pytest

from codex_core import registry, sources
from codex_core.errors import ModelNotFoundError, UsageError


@pytest.fixture
def spec():
    return registry.get_engine("sd15")


def diffusers_folder(path):
    path.mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    return path


def fake_hub_cache(hf_home, repo_id):
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    return diffusers_folder(repo / "snapshots" / "abc123")


def test_explicit_folder_wins(spec, tmp_path, monkeypatch):
    folder = diffusers_folder(tmp_path / "mine")
    monkeypatch.setenv("CODEX_MODEL_SD15", str(tmp_path / "elsewhere"))
    source = sources.resolve(spec, str(folder))
    assert (source.kind, source.path, source.found_via) == ("folder", folder, "--model")


def test_env_var_then_models_dir_then_default_repo(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    snapshot = fake_hub_cache(tmp_path / "hf", spec.default_repo)
    assert sources.resolve(spec, None).path == snapshot
    local = diffusers_folder(tmp_path / "models" / "sd15")
    assert sources.resolve(spec, None).path == local
    env = diffusers_folder(tmp_path / "env-model")
    monkeypatch.setenv("CODEX_MODEL_SD15", str(env))
    assert sources.resolve(spec, None).found_via == "CODEX_MODEL_SD15"


def test_repo_id_is_looked_up_in_the_local_cache_only(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    snapshot = fake_hub_cache(tmp_path / "hf", "someone/some-model")
    source = sources.resolve(spec, "someone/some-model")
    assert (source.kind, source.path, source.repo_id) == ("hub", snapshot, "someone/some-model")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache") as caught:
        sources.resolve(spec, "someone/other-model")
    assert "--download" in caught.value.hint


def test_single_files_are_sources_checked_and_non_diffusers_folders_are_explained(spec, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="not a valid safetensors file"):  # checked now, not when loading
        sources.resolve(spec, str(tmp_path / "model.safetensors"))
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(UsageError, match="(?s)pickle-based file.*--allow-pickle"):
        sources.resolve(spec, str(tmp_path / "model.ckpt"))
    assert sources.resolve(spec, str(tmp_path / "model.ckpt"), allow_pickle=True).kind == "file"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="not a weight file"):
        sources.resolve(spec, str(tmp_path / "notes.txt"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match="no model_index.json inside"):
        sources.resolve(spec, str(tmp_path / "plain"))


def test_tiny_lives_in_the_cache_dir(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_CACHE_DIR", str(tmp_path))
    source = sources.resolve(spec, "tiny")
    assert source.path == tmp_path / "tiny" / f"sd15-{spec.tiny_version}"


def test_a_task_with_its_own_checkpoint_has_its_own_slot(tmp_path, monkeypatch):
    import copy

    spec = copy.copy(registry.get_engine("sd15"))
    spec.task_default_repos = {"inpaint": "org/inpaint-model"}
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path))
    general = diffusers_folder(tmp_path / "sd15")
    special = diffusers_folder(tmp_path / "sd15_inpaint")
    assert sources.resolve(spec, None, task="txt2img").path == general
    assert sources.resolve(spec, None, task="inpaint").path == special
    monkeypatch.setenv("CODEX_MODEL_SD15_INPAINT", str(general))
    assert sources.resolve(spec, None, task="inpaint").found_via == "CODEX_MODEL_SD15_INPAINT"
    monkeypatch.delenv("CODEX_MODEL_SD15_INPAINT")
    special.joinpath("model_index.json").unlink()
    with pytest.raises(ModelNotFoundError, match="no model found for sd15 inpaint") as caught:
        sources.resolve(spec, None, task="inpaint")
    assert "org/inpaint-model in the local Hugging Face cache" in str(caught.value)
