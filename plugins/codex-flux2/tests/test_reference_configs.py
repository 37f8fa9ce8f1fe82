"""The shipped reference configs have the published sizes, and each tiny model is its reference
architecture at another size."""

from __future__ import annotations

import json
import shutil

import pytest

from codex_diffusers import component_sizes, reference_config_dir
from codex_diffusers.testing import assert_tiny_matches_reference, tiny_model_dir

# Published sizes (see reference_configs/README.md for the sources): transformer, text encoder.
PUBLISHED = {
    ("flux2", "dev"): {"transformer": 32e9, "text_encoder": 24e9},
    ("flux2_klein", "4b"): {"transformer": 3.9e9, "text_encoder": 4.0e9},
    ("flux2_klein", "9b"): {"transformer": 9e9, "text_encoder": 8.2e9},
}


@pytest.mark.parametrize("engine, variant", sorted(PUBLISHED))
def test_reference_configs_have_the_published_sizes(engine, variant):
    sizes = component_sizes(reference_config_dir(engine, variant))
    assert set(sizes) == {"transformer", "text_encoder", "vae"}
    for name, published in PUBLISHED[engine, variant].items():
        assert sizes[name].parameters == pytest.approx(published, rel=0.02), (name, sizes[name].parameters)


def test_klein_tiny_model_is_the_klein_architecture():
    assert_tiny_matches_reference("flux2_klein", "4b")
    assert_tiny_matches_reference("flux2_klein", "9b", ignore={"text_encoder": {"tie_word_embeddings"}})  # 4B ties


def test_dev_tiny_model_is_the_dev_architecture_but_for_the_processor(tmp_path):
    """The tiny [dev] saves the tokenizer the real PixtralProcessor wraps (the processor needs torchvision, which this
    machine cannot install): everything else must be the real architecture, and the tokenizer the processor's own."""
    folder = tmp_path / "dev"
    shutil.copytree(tiny_model_dir("flux2"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["tokenizer"] == ["transformers", "LlamaTokenizer"]  # what the real processor's tokenizer_config names
    (folder / "model_index.json").write_text(json.dumps({**index, "tokenizer": ["transformers", "PixtralProcessor"]}))
    assert_tiny_matches_reference("flux2", folder=folder)
