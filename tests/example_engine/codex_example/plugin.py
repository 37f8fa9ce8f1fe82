"""The example plugin: one implementation of every Codex hook. Imports only codex_core (no torch).

tests/test_third_party_engine.py installs this package and exercises each hook through the
`codex` CLI; a new hookspec fails there until this plugin implements it and a test shows its effect.
"""

from pathlib import Path

import click

from pydantic import Field

from codex_core import Exporter, PreprocessorParams, Preprocessor, RunOption, SamplerDef, hookimpl

from .engine import GradientEngine


@hookimpl
def codex_register_engines(register):
    register(GradientEngine())


@hookimpl
def codex_register_samplers(register):
    # A1111's "Euler" with trailing timesteps under a name of its own, for discrete engines
    register(SamplerDef("Euler Trailing", "discrete", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"},
                        accepts=frozenset({"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"})))


def write_parameters_txt(output, files, info) -> list[Path]:
    """A1111's sidecar text file: the `parameters` text of each image as <index>.txt."""
    from codex_core.exporters.png import parameters_text

    written = []
    for index, image in enumerate(output.images):
        path = files.staging_dir / f"{index:04d}.txt"
        path.write_text(parameters_text(info, image.size, index) + "\n", encoding="utf-8")
        written.append(path)
    return written


@hookimpl
def codex_register_exporters(register):
    register(Exporter("txt", "image", write_parameters_txt, "the A1111 parameters text of each image, as .txt"))


def _positive(value: float, runtime) -> str | None:
    return None if value > 0 else f"got {value}; a gamma is above 0 (1.0: as computed)"


@hookimpl
def codex_register_run_options(register):
    # a run option of this plugin's own: it appears in `codex run`, batch, grid and serve, is recorded in
    # info.json (gradient_gamma) and replayed; engines other than this one refuse a value other than 1.0
    register(RunOption("gradient_gamma", "--gradient-gamma", 1.0, "Gamma of the example gradients (1.0: linear).",
                       check=_positive, metavar="GAMMA", applies=lambda engine: engine.key == "example_gradient"))


class PosterizeParams(PreprocessorParams):
    bits: int = Field(2, ge=1, le=8, description="Bits kept per channel.")


def posterize(image, params: PosterizeParams):
    from PIL import ImageOps

    return ImageOps.posterize(image, params.bits)


@hookimpl
def codex_register_preprocessors(register):
    # a control-image preprocessor of this plugin's own: `codex preprocess posterize IMAGE --param bits=1`
    register(Preprocessor("posterize", "fewer levels per channel (Pillow's posterize)", posterize, PosterizeParams))


@hookimpl
def codex_register_commands(cli):
    @cli.command("example-hello")
    @click.argument("name", default="world")
    def example_hello(name):
        """Say hello from the example plugin."""
        click.echo(f"hello, {name}, from codex-example-engine")
