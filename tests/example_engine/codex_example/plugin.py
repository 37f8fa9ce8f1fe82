"""Registers ``example_gradient``. Imports only codex_core: the engine module loads on first run."""

from pathlib import Path

from codex_core import hookimpl
from codex_core.engines import EngineSpec
from codex_core.params import Txt2ImgParams


class GradientTxt2Img(Txt2ImgParams):
    size_multiple = 1  # plain pixels, no latent space: any size


SPEC = EngineSpec(
    key="example_gradient",
    family="example",
    tasks={"txt2img": GradientTxt2Img},
    engine="codex_example.engine:GradientEngine",
    sampler_family=None,
    model_marker="gradient.json",
    tiny_version="1",
    presets_dir=Path(__file__).parent / "presets" / "example_gradient",
    description="Example third-party engine: seeded colour gradients",
)


@hookimpl
def codex_register_engines(register):
    register(SPEC)
