"""--component transformer=FILE for the DiT engines whose own tests do not cover it (Wan and Flux do):
a transformer file in diffusers key layout gives the base folder's pixels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from codex_core.testing import cli_run, tiny_model_dir
from codex_diffusers.testing import pixels

CASES = {
    "hunyuan_video": {"prompt": "waves", "seed": 1, "width": 32, "height": 32, "num_frames": 5, "steps": 2},
    "ltx_video": {"prompt": "waves", "seed": 1, "width": 32, "height": 32, "num_frames": 9, "steps": 2},
}


def first_frame(result) -> np.ndarray:
    return pixels(json.loads(result.stdout)["run_dir"] + "/frames/0000.png")


@pytest.mark.parametrize("engine", sorted(CASES))
def test_a_transformer_file_gives_the_folders_pixels(engine, tmp_path):
    base = tiny_model_dir(engine)
    single = tmp_path / "transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    common = ["run", engine, "txt2vid", "--model", str(base), "--format", "frames", "--quiet",
              "--json", json.dumps(CASES[engine])]
    reference = cli_run([*common, "--out", str(tmp_path / "a")])
    ours = cli_run([*common, "--out", str(tmp_path / "b"), "--component", f"transformer={single}"])
    assert reference.exit_code == 0 and ours.exit_code == 0, ours.stderr
    assert np.array_equal(first_frame(reference), first_frame(ours))
    assert json.loads(ours.stdout)["info"]["model"]["components"] == {"transformer": str(single)}
