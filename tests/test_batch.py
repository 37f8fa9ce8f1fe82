"""`codex batch` and `codex grid` on tiny models: one load per model, the pixels of `codex run`, line-numbered
errors, resume after SIGKILL, two ranks under torchrun, and a labelled grid image."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codex_core import registry
from codex_core.model_cache import cache
from codex_core.orchestrator import RunOptions, run
from codex_core.testing import cli_run, interrupted, run_json, write_test_image

SMALL = {"width": 32, "height": 32, "steps": 2}
ENGINES = ("sd15", "flux")


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def summary_of(result) -> dict:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return json.loads(result.stdout)


def twelve_items() -> list[dict]:
    """Two engines interleaved, so that only grouping by model keeps the loads at one per engine."""
    return [{"engine": ENGINES[i % 2], "task": "txt2img", "model": "tiny",
             "request": {"prompt": f"a lighthouse, variant {i}", **SMALL, "seed": 100 + i}} for i in range(12)]


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    """The 12-item batch, run in-process from an empty model cache, with every engine load counted."""
    tmp = tmp_path_factory.mktemp("batch12")
    items = twelve_items()
    items[4]["id"] = "given-id"
    loads = {key: 0 for key in ENGINES}
    cache.clear()
    with pytest.MonkeyPatch.context() as patch:
        for key in ENGINES:
            engine = registry.get_engine(key)

            def counted(source, runtime, key=key, real=engine.load):
                loads[key] += 1
                return real(source, runtime)

            patch.setattr(engine, "load", counted)
        summary = summary_of(cli_run(["batch", str(write_jsonl(tmp / "twelve.jsonl", items)), "--out",
                                      str(tmp / "out"), "-q"]))
    return {"items": items, "summary": summary, "loads": loads, "out": tmp / "out"}


def test_a_batch_over_two_engines_loads_each_model_once_and_says_so(twelve):
    summary = twelve["summary"]
    assert twelve["loads"] == {"sd15": 1, "flux": 1}
    assert summary["counts"] == {"done": 12, "failed": 0, "skipped": 0, "invalid": 0, "pending": 0}
    records = summary["items"]
    assert [r["line"] for r in records] == list(range(1, 13)) and records[4]["id"] == "given-id"
    assert len({r["id"] for r in records}) == 12
    for key in ENGINES:
        infos = [json.loads((Path(r["run_dir"]) / "info.json").read_text()) for r in records if r["engine"] == key]
        reused = [info["model"]["reused_from_cache"] for info in infos]
        assert sorted(reused) == [False] + [True] * 5, (key, reused)  # loaded by one item, reused by the others
        assert all(info["timings"]["load"] == 0.0 for info in infos if info["model"]["reused_from_cache"])
        assert sum(r["model_reused"] for r in records if r["engine"] == key) == 5
    # the summary on disk is the one printed, and each item's run folder is named by its id
    assert json.loads((twelve["out"] / "batch.json").read_text())["items"] == records
    assert all(Path(r["run_dir"]) == twelve["out"] / r["id"] for r in records)


@pytest.mark.slow
def test_batch_outputs_are_the_pixels_and_files_of_separate_runs(twelve, tmp_path):
    for item, record in zip(twelve["items"], twelve["summary"]["items"]):
        alone = run(item["engine"], item["task"], item["request"],
                    RunOptions(model="tiny", out=tmp_path / "runs", quiet=True))
        batch_dir = Path(record["run_dir"])
        assert sorted(p.name for p in batch_dir.iterdir()) == sorted(p.name for p in alone.run_dir.iterdir())
        assert np.array_equal(pixels(batch_dir / "0000.png"), pixels(alone.run_dir / "0000.png")), record["id"]
        info = json.loads((batch_dir / "info.json").read_text())
        assert info["request"] == alone.info["request"] and info["run_id"] == record["id"]


def test_a_bad_line_is_reported_by_its_number(tmp_path):
    good = {"engine": "sd15", "task": "txt2img", "model": "tiny", "request": {"prompt": "a fox", **SMALL, "seed": 1}}
    bad_steps = {**good, "request": {**good["request"], "steps": "2"}}
    lines = [json.dumps(good), "", json.dumps(bad_steps), json.dumps({**good, "tsk": "x"}), "{not json"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")

    strict = cli_run(["batch", str(path), "--out", str(tmp_path / "strict"), "--strict", "-q"])
    assert strict.exit_code == 2 and not (tmp_path / "strict").exists()
    assert "line 3" in strict.stderr and "steps: got '2'" in strict.stderr
    assert "line 4: unknown field 'tsk' (did you mean 'task'?)" in strict.stderr
    assert "line 5: not valid JSON" in strict.stderr

    lenient = cli_run(["batch", str(path), "--out", str(tmp_path / "lenient"), "-q"])
    assert lenient.exit_code == 1, lenient.stderr  # the valid item ran; the batch is not all done
    summary = json.loads(lenient.stdout)
    assert [(r["line"], r["status"]) for r in summary["items"]] == [(1, "done"), (3, "invalid"), (4, "invalid"),
                                                                    (5, "invalid")]
    assert "steps" in summary["items"][1]["error"] and summary["counts"]["invalid"] == 3

    wrong_type = tmp_path / "bad.txt"
    wrong_type.write_text(lines[0])
    refused = cli_run(["batch", str(wrong_type), "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "unknown batch file type '.txt'" in refused.stderr


def test_yaml_items_are_numbered_by_their_line(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("items:\n"
                    "  - {engine: sd15, task: txt2img, model: tiny, request: {prompt: a, width: 32, height: 32}}\n"
                    "  - engine: sd15\n"
                    "    task: txt2img\n"
                    "    request: {prompt: b, width: 33}\n")
    result = cli_run(["batch", str(path), "--out", str(tmp_path / "out"), "--strict", "-q"])
    assert result.exit_code == 2 and "line 3" in result.stderr and "width" in result.stderr


@pytest.mark.slow
def test_resume_after_sigkill_runs_only_the_missing_items(tmp_path):
    items = [{"engine": "sd15", "task": "txt2img", "model": "tiny", "id": f"item-{i}",
              "request": {"prompt": f"a harbour {i}", **SMALL, "steps": 8, "seed": i}} for i in range(6)]
    path, out = write_jsonl(tmp_path / "slow.jsonl", items), tmp_path / "out"
    codex = Path(sys.executable).parent / "codex"
    proc = subprocess.Popen([str(codex), "batch", str(path), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                summary = json.loads((out / "batch.json").read_text())
            except (OSError, ValueError) as exc:  # not written yet; never half-written (ValueError would be a bug)
                assert isinstance(exc, OSError), exc
                time.sleep(0.05)
                continue
            done = [r["id"] for r in summary["items"] if r["status"] == "done"]
            if done:  # killed while the next item runs (each takes far longer than a poll)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the batch ended before it was killed: {proc.stderr.read()!r}"
    assert 1 <= len(done) < 6
    before = {item_id: (out / item_id / "info.json").stat().st_mtime_ns for item_id in done}
    complete_before = {p.name for p in out.iterdir() if (p / "info.json").is_file()}
    assert set(done) <= complete_before and len(complete_before) < 6

    again = cli_run(["batch", str(path), "--out", str(out)])
    refused = again.exit_code == 2 and "--resume" in again.stderr
    assert refused, "a second run without --resume must not touch the batch"
    summary = summary_of(cli_run(["batch", str(path), "--out", str(out), "--resume", "-q"]))
    statuses = {r["id"]: r["status"] for r in summary["items"]}
    assert {i for i, s in statuses.items() if s == "skipped"} == complete_before
    assert {i for i, s in statuses.items() if s == "done"} == {item["id"] for item in items} - complete_before
    assert {item_id: (out / item_id / "info.json").stat().st_mtime_ns for item_id in done} == before  # not rerun
    assert sorted(p.name for p in out.iterdir()) == sorted([item["id"] for item in items] + ["batch.json"])


@pytest.mark.slow
def test_ctrl_c_exits_130_and_loses_only_the_item_in_progress(tmp_path):
    quick = {"engine": "sd15", "task": "txt2img", "model": "tiny", "id": "quick",
             "request": {"prompt": "a boat", **SMALL, "seed": 1}}
    long = {**quick, "id": "long", "request": {**quick["request"], "steps": 400}}
    path, out = write_jsonl(tmp_path / "two.jsonl", [quick, long]), tmp_path / "out"
    status, err = interrupted(["batch", str(path), "--out", str(out)], b"/400 [", signal.SIGINT)
    assert status == 130, err
    summary = json.loads((out / "batch.json").read_text())
    assert [(r["id"], r["status"]) for r in summary["items"]] == [("quick", "done"), ("long", "pending")]
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "quick"]  # no staging folder left


@pytest.mark.distributed
def test_two_ranks_under_torchrun_split_the_items_and_make_the_same_pixels(tmp_path):
    items = [{"engine": "sd15", "task": "txt2img", "model": "tiny",
              "request": {"prompt": f"a mill {i}", **SMALL, "seed": 7 + i}} for i in range(5)]
    path, out = write_jsonl(tmp_path / "ranks.jsonl", items), tmp_path / "out"
    codex = Path(sys.executable).parent / "codex"  # a real process: torchrun's own messages land in the failure
    done = subprocess.run([str(codex), "batch", str(path), "--out", str(out), "--processes", "2", "-q"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    records = summary["items"]
    assert summary["processes"] == 2 and summary["counts"]["done"] == 5
    assert len(records) == 5 and len({r["id"] for r in records}) == 5
    assert sorted(r["rank"] for r in records) == [0, 0, 0, 1, 1]  # contiguous shares: 3 and 2
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        sorted([r["id"] for r in records] + ["batch.json"])
    # each rank ran with OMP_NUM_THREADS = cores / ranks; a CPU convolution's sums depend on the thread count
    # (one level of one pixel on some CPUs), so the separate runs use the ranks' count
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        for item, record in zip(items, records):
            alone = run("sd15", "txt2img", item["request"], RunOptions(model="tiny", out=tmp_path / "alone", quiet=True))
            assert np.array_equal(pixels(Path(record["run_dir"]) / "0000.png"), pixels(alone.files[0])), record
    finally:
        torch.set_num_threads(threads)


@pytest.mark.distributed
def test_under_a_plain_torchrun_rank_0_holds_the_folder_for_the_group(tmp_path):
    items = [{"engine": "sd15", "task": "txt2img", "model": "tiny", "id": f"mill-{i}",
              "request": {"prompt": f"a mill {i}", **SMALL, "seed": i}} for i in range(3)]
    path, out = write_jsonl(tmp_path / "ranks.jsonl", items), tmp_path / "out"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "codex_core.cli", "batch", str(path), "--out", str(out), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(r["rank"] for r in json.loads(done.stdout)["items"]) == [0, 0, 1]
    assert not (out / "batch.lock").exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        before = (out / "batch.json").read_bytes()
        refused = subprocess.run([*torchrun, "--resume"], capture_output=True, text=True, timeout=600, env=env)
        assert refused.returncode != 0 and f"in use by another codex batch (pid {holder.pid})" in refused.stderr
        assert (out / "batch.json").read_bytes() == before  # no rank wrote anything
        launcher = cli_run(["batch", str(path), "--out", str(out), "--resume", "--processes", "2", "-q"])
        assert launcher.exit_code == 2 and f"(pid {holder.pid})" in launcher.stderr  # refused before any rank starts
    finally:
        holder.kill()
        holder.wait(30)


def test_a_grid_of_2_by_3_cells_has_its_labelled_image_and_axes(tmp_path):
    request = {"prompt": "a red fox in snow", **SMALL}
    out = tmp_path / "grid"
    summary = summary_of(cli_run(["grid", "sd15", "txt2img", "--model", "tiny", "--json", json.dumps(request),
                                  "--x", "seed=1,2", "--y", "prompt_sr=fox,cat,owl", "--id", "fox", "--out", str(out),
                                  "-q"]))
    assert summary["counts"]["done"] == 6
    grid = summary["grids"][0]
    assert grid["status"] == "done" and grid["cells"] == 6
    with Image.open(grid["path"]) as image:
        image.load()
        meta = json.loads(image.info["codex_grid"])
        canvas = image.convert("RGB")
    assert [(a["axis"], a["field"], a["values"]) for a in meta["axes"]] == [("x", "seed", [1, 2]),
                                                                           ("y", "prompt_sr", ["fox", "cat", "owl"])]
    assert [a["labels"] for a in meta["axes"]] == [["seed: 1", "seed: 2"], ["fox", "cat", "owl"]]
    assert meta["cell_size"] == [32, 32] and len(meta["cells"]) == 6
    left, top = meta["cells"][0]["box"][:2]
    assert left > 0 and top > 0  # room for the labels
    assert canvas.size == (left + 2 * 32, top + 3 * 32)
    blank_margin = np.asarray(canvas)[:top, left:]
    assert (blank_margin < 128).any()  # the x labels are drawn
    for cell in meta["cells"]:
        x0, y0, x1, y1 = cell["box"]
        assert (x0, y0) == (left + 32 * cell["x"], top + 32 * cell["y"])
        cell_dir = out / cell["id"]
        assert np.array_equal(np.asarray(canvas.crop((x0, y0, x1, y1))), pixels(cell_dir / "0000.png"))
        info = json.loads((cell_dir / "info.json").read_text())
        assert info["request"]["seed"] == [1, 2][cell["x"]]
        assert info["request"]["prompt"] == f"a red {['fox', 'cat', 'owl'][cell['y']]} in snow"


def test_an_edit_runs_in_a_grid_and_a_batch_as_codex_run_makes_it(tmp_path):
    """edit (reference images) over a seed axis, and as a batch item: each cell is the run `codex run` makes."""
    images = [str(write_test_image(tmp_path / f"{name}.png", (80, 64), seed=index)) for index, name in enumerate("ab")]
    request = {"prompt": "swap the two", "images": images, "steps": 2, "max_sequence_length": 16}
    summary = summary_of(cli_run(["grid", "flux2_klein", "edit", "--model", "tiny", "--json", json.dumps(request),
                                  "--x", "seed=1,2", "--out", str(tmp_path / "grid"), "-q"]))
    assert summary["counts"]["done"] == 2 and summary["grids"][0]["cells"] == 2
    cells = {json.loads((Path(item["run_dir"]) / "info.json").read_text())["request"]["seed"]: Path(item["run_dir"])
             for item in summary["items"]}
    single = run_json("flux2_klein", "edit", {**request, "seed": 2}, tmp_path / "single")
    assert single["info"]["notes"]["edit_size"]["width"] == 80
    assert np.array_equal(pixels(cells[2] / "0000.png"), pixels(single["files"][0]))
    assert not np.array_equal(pixels(cells[1] / "0000.png"), pixels(cells[2] / "0000.png"))
    lines = tmp_path / "edits.jsonl"
    lines.write_text(json.dumps({"id": "e", "engine": "flux2_klein", "task": "edit", "model": "tiny",
                                 "request": {**request, "seed": 2}}) + "\n")
    batch = summary_of(cli_run(["batch", str(lines), "--out", str(tmp_path / "batch"), "-q"]))
    assert batch["counts"]["done"] == 1
    assert np.array_equal(pixels(tmp_path / "batch" / "e" / "0000.png"), pixels(single["files"][0]))


def test_grid_axes_are_checked_before_anything_runs(tmp_path):
    base = ["grid", "sd15", "txt2img", "--model", "tiny", "--json", '{"prompt": "a fox"}', "--out", str(tmp_path / "g")]
    for args, message in [(["--x", "seed"], "is not FIELD=VALUES"),
                          (["--x", "prompt_sr=wolf,cat"], "'wolf' (the first value, searched for) does not occur"),
                          (["--x", "seed=1,1"], "repeats a value"),
                          (["--x", "steps=2,x"], "steps: got 'x'"),
                          (["--x", "seed=1,2", "--z", "cfg=3,4"], "--z: needs --y")]:
        result = cli_run([*base, *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "g").exists()


def test_the_core_batch_modules_import_no_torch():
    script = "import sys, codex_core.batch, codex_core.batch_file, codex_core.batch_ranks, codex_core.grid; print(sorted(m for m in ('torch', 'accelerate') " \
             "if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ}).stdout.strip()
    assert found == "[]"


def test_a_video_grid_plays_the_cells_side_by_side_at_their_fps(tmp_path):
    """A video task's grid: <out>/grids/<id>.mp4 has the cells' frame count and fps, the labelled layout's
    size, each cell's first frame in its box (through H.264: close, not equal), and the axes in its comment."""
    from codex_core.exporters.video import decode_frames, probe, read_video_comment

    request = {"prompt": "a fox running", "width": 32, "height": 32, "num_frames": 5, "fps": 8, "steps": 2}
    out = tmp_path / "vgrid"
    summary = summary_of(cli_run(["grid", "wan_ti2v_5b", "txt2vid", "--model", "tiny", "--json", json.dumps(request),
                                  "--x", "seed=1,2", "--format", "frames", "--out", str(out), "-q"]))
    grid = summary["grids"][0]
    assert grid["status"] == "done" and grid["cells"] == 2 and grid["path"].endswith(".mp4")
    shape = probe(Path(grid["path"]))
    assert shape["frames"] == 5 and shape["fps"] == 8 and [shape["width"], shape["height"]] == grid["size"]
    meta = json.loads(read_video_comment(Path(grid["path"])))["codex_grid"]
    assert [axis["field"] for axis in meta["axes"]] == ["seed"] and meta["cell_size"] == [32, 32]
    first = next(decode_frames(Path(grid["path"])))
    for cell in meta["cells"]:
        x0, y0, x1, y1 = cell["box"]
        with Image.open(out / cell["id"] / "frames" / "0000.png") as frame:
            expected = np.asarray(frame.convert("RGB"), dtype=np.int16)
        shown = np.asarray(first.crop((x0, y0, x1, y1)), dtype=np.int16)
        assert np.abs(shown - expected).mean() < 12, cell


# -- one process per --out, reserved ids, a damaged item folder ------------------------------------------------

HOLD_THE_LOCK = """
import sys
from pathlib import Path
from codex_core.batch_lock import batch_lock
with batch_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def one_item(tmp_path: Path, **extra) -> Path:
    item = {"engine": "sd15", "task": "txt2img", "model": "tiny", "id": "fox",
            "request": {"prompt": "a fox", **SMALL, "seed": 3}, **extra}
    return write_jsonl(tmp_path / "one.jsonl", [item])


@pytest.mark.slow
@pytest.mark.parametrize("ends", ["cleanly", "killed"])
def test_a_second_process_on_the_same_out_is_refused_naming_the_holder(tmp_path, ends):
    """The holder is another process that locked the folder (batch_lock itself); it ends cleanly or by SIGKILL, and
    either way the folder is free again."""
    path, out = one_item(tmp_path), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        for resume in ([], ["--resume"]):
            refused = cli_run(["batch", str(path), "--out", str(out), "-q", *resume])
            assert refused.exit_code == 2, refused.stderr
            assert f"is in use by another codex batch (pid {holder.pid})" in refused.stderr
        assert sorted(p.name for p in out.iterdir()) == ["batch.lock"]  # the refused runs wrote nothing
    finally:
        if ends == "cleanly":
            holder.stdin.close()
        else:
            holder.kill()
        holder.wait(30)
    assert (out / "batch.lock").exists() == (ends == "killed")  # a kill leaves the file, but not the lock
    summary_of(cli_run(["batch", str(path), "--out", str(out), "-q"]))
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "fox"]  # released and removed on exit


@pytest.mark.slow
def test_two_resumes_at_once_run_the_batch_once(tmp_path):
    quick = {"engine": "sd15", "task": "txt2img", "model": "tiny", "id": "quick",
             "request": {"prompt": "a boat", **SMALL, "seed": 1}}
    long = {**quick, "id": "long", "request": {**quick["request"], "steps": 400}}
    path, out = write_jsonl(tmp_path / "two.jsonl", [quick, long]), tmp_path / "out"
    codex = Path(sys.executable).parent / "codex"
    first = subprocess.Popen([str(codex), "batch", str(path), "--out", str(out), "--resume"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = b""
        while b"/400 [" not in seen:  # the first is running the long item
            chunk = os.read(first.stderr.fileno(), 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        second = cli_run(["batch", str(path), "--out", str(out), "--resume", "-q"])
        assert second.exit_code == 2 and f"(pid {first.pid})" in second.stderr
    finally:
        first.kill()
        first.wait(60)
    summary = summary_of(cli_run(["batch", str(path), "--out", str(out), "--resume", "-q"]))
    assert {r["id"]: r["status"] for r in summary["items"]} == {"quick": "skipped", "long": "done"}


def test_ids_a_batch_keeps_its_own_files_under_are_refused_per_item(tmp_path):
    good = {"engine": "sd15", "task": "txt2img", "model": "tiny", "request": {"prompt": "a fox", **SMALL}}
    ids = ["batch.json", "Batch.JSON", "batch.lock", ".parts", ".fox.partial", "ok"]
    path = write_jsonl(tmp_path / "ids.jsonl", [{**good, "id": given} for given in ids])
    strict = cli_run(["batch", str(path), "--out", str(tmp_path / "out"), "--strict", "-q"])
    assert strict.exit_code == 2 and not (tmp_path / "out").exists()
    assert "line 1: id: 'batch.json' is reserved (the batch's summary has that name in --out)" in strict.stderr
    assert "line 2: id: 'Batch.JSON' is reserved" in strict.stderr
    assert "line 3: id: 'batch.lock' is reserved (the batch's lock file" in strict.stderr
    assert "line 4: id: got '.parts'; an id names the item's run folder" in strict.stderr
    assert "line 5: id: got '.fox.partial'" in strict.stderr and "line 6" not in strict.stderr
    grid = tmp_path / "grid.yaml"
    grid.write_text("items:\n  - {engine: sd15, task: txt2img, model: tiny, id: grids, request: {prompt: a}}\n"
                    "grid: {engine: sd15, task: txt2img, model: tiny, request: {prompt: a}, x: 'seed=1,2'}\n")
    refused = cli_run(["batch", str(grid), "--out", str(tmp_path / "grid"), "--strict", "-q"])
    assert refused.exit_code == 2 and "line 2: id: 'grids' is reserved in a batch with a grid" in refused.stderr


@pytest.mark.parametrize("damage", ["not json", "a list", "a file"])
def test_a_damaged_item_folder_is_run_again_and_replaced_on_resume(tmp_path, damage):
    path, out = one_item(tmp_path), tmp_path / "out"
    summary_of(cli_run(["batch", str(path), "--out", str(out), "-q"]))
    folder = out / "fox"
    if damage == "a file":
        shutil.rmtree(folder)
        folder.write_text("not a run folder")
    else:
        (folder / "info.json").write_text("{not json" if damage == "not json" else "[]")
    again = cli_run(["batch", str(path), "--out", str(out), "--resume"])
    assert again.exit_code == 0, again.stderr
    assert "fox" in again.stderr and "has no readable info.json; running the item again" in again.stderr
    assert [(r["id"], r["status"]) for r in json.loads(again.stdout)["items"]] == [("fox", "done")]
    assert json.loads((folder / "info.json").read_text())["request_in"]["prompt"] == "a fox"
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "fox"]  # nothing set aside is left
    third = summary_of(cli_run(["batch", str(path), "--out", str(out), "--resume", "-q"]))
    assert [(r["id"], r["status"]) for r in third["items"]] == [("fox", "skipped")]
