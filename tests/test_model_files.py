"""The models folders: layouts, the config file's extra roots, names, headers, hashes and `codex models`."""

import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codex_core import model_files
from codex_core.errors import UsageError
from codex_core.testing import clear_model_cache, cli_run, loaded_models


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


# -- files nobody should have to trust: crafted headers, loops, FIFOs, devices, a slow disk -------------------


def within(seconds: float, call):
    """``call()``'s result, run in a daemon thread: taking longer than ``seconds`` fails the test (a hang never
    blocks the suite)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def raw_safetensors(path, header: bytes, data: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * data)


def tensor(**entry) -> bytes:
    return json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16], **entry}}).encode()


CRAFTED = [
    (tensor(data_offsets="ab"), "data_offsets is not a pair [begin, end] of non-negative integers"),
    (tensor(data_offsets=[16]), "data_offsets is not a pair"),
    (tensor(data_offsets=[0, 8, 16]), "data_offsets is not a pair"),
    (tensor(data_offsets=[8, 0]), "begin <= end"),
    (tensor(data_offsets=[0, -16]), "data_offsets is not a pair"),
    (tensor(data_offsets=[0, 16.0]), "data_offsets is not a pair"),
    (tensor(data_offsets=[False, True]), "data_offsets is not a pair"),
    (tensor(shape=4), "shape is not a list of non-negative integers"),
    (tensor(shape=["4"]), "shape is not a list of non-negative integers"),
    (tensor(shape=[4.0]), "shape is not a list of non-negative integers"),
    (tensor(shape=[[4]]), "header nests deeper than the 3 levels of the format"),
    (tensor(shape=[-4]), "shape is not a list of non-negative integers"),
    (tensor(dtype=7), "dtype is int, not a string"),
    (json.dumps({"__metadata__": {"a": 1}}).encode(), "__metadata__ is not a mapping of names to strings"),
    (json.dumps({"t": [1, 2]}).encode(), "entry 't' lacks dtype/shape/data_offsets"),
    (b"[" * 100_000 + b"]" * 100_000, "header nests deeper than the 3 levels of the format"),
    (b'{"t": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001, "header nests deeper than the 3 levels"),
    (b"[" * 100_000, "header nests deeper than the 3 levels"),
]


@pytest.mark.parametrize("header, why", CRAFTED, ids=[f"crafted-{i}" for i in range(len(CRAFTED))])
def test_a_crafted_header_is_a_listed_problem_and_a_usage_error_never_a_crash(roots, header, why):
    checkpoint, lora = roots["codex"] / "checkpoints" / "bad.safetensors", roots["codex"] / "loras" / "bad.safetensors"
    raw_safetensors(checkpoint, header)
    raw_safetensors(lora, header)
    with pytest.raises(UsageError, match="not a valid safetensors file") as caught:
        model_files.read_safetensors_header(checkpoint, "--model")
    assert why in caught.value.message and str(checkpoint) in caught.value.message
    listed = within(30, lambda: cli_run(["models", "--json"]))
    assert listed.exit_code == 0, listed.stderr
    problems = {row["path"]: row["problem"] for row in json.loads(listed.stdout)}
    assert why in problems[str(checkpoint)] and why in problems[str(lora)]
    for model in ("bad", str(checkpoint)):  # by name in the models folders, and by path
        result = cli_run(["run", "sd15", "txt2img", "--model", model, "--json", '{"prompt": "x"}'])
        assert result.exit_code == 2 and str(checkpoint) in result.stderr and why in result.stderr


def test_a_header_that_claims_more_than_the_file_or_the_format_allows_is_refused(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(UsageError, match="exceeds the file"):
        model_files.read_safetensors_header(short)
    empty = tmp_path / "empty.safetensors"
    raw_safetensors(empty, b"{}", data=0)  # no tensors at all: a valid, if useless, file
    assert model_files.read_safetensors_header(empty) == {}


def two_loops_and_the_unreadable(folder):
    """``folder`` with a LoRA, two links back up the tree (a walk that follows links without remembering where it
    has been doubles at each level), a FIFO, a link to /dev/zero, a broken link and a link to itself, each named as
    a weight file."""
    kohya_lora(folder / "ink.safetensors", 768)
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..", target_is_directory=True)
    (folder / "again").symlink_to(".", target_is_directory=True)
    os.mkfifo(folder / "pipe.safetensors")
    (folder / "zero.safetensors").symlink_to("/dev/zero")
    (folder / "gone.safetensors").symlink_to(folder / "nowhere.safetensors")
    (folder / "self.safetensors").symlink_to("self.safetensors")


def test_two_symlink_loops_are_walked_once_and_what_cannot_be_read_is_skipped_with_why(roots):
    loras = roots["codex"] / "loras"
    loras.mkdir(parents=True)
    two_loops_and_the_unreadable(loras)
    found = within(30, lambda: model_files.scan_folders(["loras"]))
    assert [(f.name, f.path) for f in found.files] == [("ink", loras / "ink.safetensors")]
    assert {(s.name, s.reason) for s in found.skipped} == {
        ("pipe", "skipped: a FIFO (named pipe), not a regular file (never opened)"),
        ("zero", "skipped: a character device, not a regular file (never opened)"),
        ("gone", "skipped: a broken link"), ("self", "skipped: a link that leads back to itself")}
    listed = within(30, lambda: cli_run(["models", "--json"]))  # hashes included: nothing is opened but ink
    assert listed.exit_code == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["ink"]["engines"] == ["sd15"] and rows["ink"]["hash"]
    assert rows["pipe"]["problem"].startswith("skipped: a FIFO") and rows["zero"]["hash"] is None
    assert "the scan skipped 4:" in listed.stderr and "pipe.safetensors: a FIFO" in listed.stderr
    with pytest.raises(UsageError, match="pipe.safetensors, which is not used .skipped: a FIFO"):
        model_files.find("loras", "pipe", "loras")


def test_a_fifo_or_a_device_is_never_opened_when_named_directly(tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    for name, kind in (("pipe", "a FIFO (named pipe)"), ("zero", "a character device")):
        path = tmp_path / f"{name}.safetensors"
        with pytest.raises(UsageError, match=re.escape(f"is {kind}, not a regular file")):
            within(10, lambda: model_files.read_safetensors_header(path, "lora"))
        with pytest.raises(UsageError, match=re.escape(f"is {kind}, not a regular file")):
            within(10, lambda: model_files.file_sha256(path))
        result = within(30, lambda: cli_run(["run", "sd15", "txt2img", "--model", str(path),
                                             "--json", '{"prompt": "x"}']))
        assert result.exit_code == 2 and f"--model: {str(path)!r} is {kind}" in result.stderr


def test_the_scan_stops_at_its_time_budget_and_says_what_it_did_not_scan(roots, monkeypatch):
    kohya_lora(roots["codex"] / "loras" / "ink.safetensors", 768)
    kohya_lora(roots["a1111"] / "models" / "Lora" / "old.safetensors", 768)
    monkeypatch.setenv("CODEX_SCAN_SECONDS", "0.000001")  # out of time before the first folder
    listed = cli_run(["models", "--json", "--kind", "loras"])
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {(row["path"], row["name"]) for row in rows} == {(str(roots["codex"] / "loras"), None),
                                                            (str(roots["a1111"] / "models" / "Lora"), None)}
    assert all("time budget of 1e-06 s ran out (CODEX_SCAN_SECONDS raises it)" in row["problem"] for row in rows)
    assert "the scan stopped after its time budget of 1e-06 s" in listed.stderr
    with pytest.raises(UsageError) as caught:
        model_files.find("loras", "ink", "loras")
    assert "the scan stopped after 1e-06 s" in caught.value.hint
    monkeypatch.setenv("CODEX_SCAN_SECONDS", "soon")
    refused = cli_run(["models"])
    assert refused.exit_code == 2 and "CODEX_SCAN_SECONDS: 'soon' is not a number of seconds" in refused.stderr
    monkeypatch.delenv("CODEX_SCAN_SECONDS")
    assert [f.name for f in model_files.scan(["loras"])] == ["ink", "old"]  # the default budget: everything


@pytest.mark.slow
def test_an_sd_run_that_looks_for_embeddings_is_not_held_by_loops_or_fifos(roots, tmp_path):
    embeddings = roots["codex"] / "embeddings"
    embeddings.mkdir(parents=True)
    two_loops_and_the_unreadable(embeddings)
    request = {"prompt": "pipe, zero and gone", "width": 32, "height": 32, "steps": 2, "seed": 1}
    result = within(120, lambda: cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out",
                                          str(tmp_path / "out"), "--json", json.dumps(request)]))
    assert result.exit_code == 0, result.stderr
    assert "embeddings" not in json.loads(result.stdout)["info"]  # none applied: the FIFO and the links are skipped


@contextlib.contextmanager
def service(state_dir: Path, **env: str):
    """A real `codex serve` on a free loopback port (its environment plus ``env``): an httpx client to it."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = state_dir.parent / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "codex"), "serve", "--port", str(port),
                                    "--state-dir", str(state_dir)], stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/v1/health")
                    break
                except httpx.HTTPError:
                    assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            yield client
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
def test_the_service_lists_crafted_files_loops_and_fifos_without_a_500_or_a_hang(roots, tmp_path):
    loras = roots["codex"] / "loras"
    loras.mkdir(parents=True)
    two_loops_and_the_unreadable(loras)
    raw_safetensors(loras / "crafted.safetensors", tensor(data_offsets="ab"))
    raw_safetensors(roots["codex"] / "checkpoints" / "deep.safetensors", b"[" * 100_000 + b"]" * 100_000)
    with service(tmp_path / "state") as client:
        listed = client.get("/v1/models", params={"kind": "loras"})
        assert listed.status_code == 200 and "X-Codex-Scan" not in listed.headers
        problems = {row["name"]: row["problem"] for row in listed.json()}
        assert problems["ink"] is None and "data_offsets is not a pair" in problems["crafted"]
        assert problems["pipe"].startswith("skipped: a FIFO") and problems["zero"].startswith("skipped: a char")
        checkpoints = client.get("/v1/models")
        assert checkpoints.status_code == 200
        assert "nests deeper" in {row["name"]: row for row in checkpoints.json()}["deep"]["problem"]
        sd_models = client.get("/sdapi/v1/sd-models")
        assert sd_models.status_code == 200 and all(entry["filename"] == "tiny" for entry in sd_models.json())
    with service(tmp_path / "state", CODEX_SCAN_SECONDS="0.000001") as client:
        listed = client.get("/v1/models", params={"kind": "loras", "engine": "sd15"})
        assert listed.status_code == 200 and listed.json() == []
        assert listed.headers["X-Codex-Scan"].startswith("incomplete: the time budget of 1e-06 s ran out")


def test_a_request_naming_a_crafted_lora_or_vae_is_refused_before_anything_loads(roots, tmp_path):
    lora, vae = roots["codex"] / "loras" / "bad.safetensors", roots["codex"] / "vae" / "badvae.safetensors"
    raw_safetensors(lora, tensor(data_offsets="ab"))
    raw_safetensors(vae, tensor(shape="4"))
    clear_model_cache()
    for extra, named in (({"loras": [{"name": "bad"}]}, lora), ({"loras": [{"path": str(lora)}]}, lora),
                         ({"vae": "badvae"}, vae), ({"vae": str(vae)}, vae), ({"prompt": "a fox <lora:bad:0.5>"}, lora)):
        request = {"prompt": "a fox", "width": 32, "height": 32, "steps": 2, **extra}
        result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path / "out"),
                          "--json", json.dumps(request)])
        assert result.exit_code == 2, (extra, result.stderr)
        assert f"{str(named)!r} is not a valid safetensors file" in result.stderr, (extra, result.stderr)
    assert loaded_models() == [] and not (tmp_path / "out").exists()
