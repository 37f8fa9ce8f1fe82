"""The kit's own plugin: its run options, the sampler tables, the annotators that run a transformers model
(``depth``) and the ``codex new-engine`` command. No torch (an annotator imports it when it runs)."""

from pathlib import Path

import click

from codex_core import handle_errors, hookimpl

from .annotators import PREPROCESSORS
from .run_options import OPTIONS
from .samplers import TABLES


@hookimpl
def codex_register_run_options(register):
    for option in OPTIONS:
        register(option)


@hookimpl
def codex_register_samplers(register):
    for item in TABLES:
        register(item)


@hookimpl
def codex_register_preprocessors(register):
    for item in PREPROCESSORS:
        register(item)


@hookimpl
def codex_register_commands(cli):
    @cli.command("new-engine")
    @click.argument("name")
    @click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
                  help="Folder to create the package in (as <dest>/codex-<name>/).")
    @click.option("--class-name", help="The engine class [default: from NAME, e.g. sd3 -> SD3Engine, my_model -> "
                                       "MyModelEngine].")
    @handle_errors
    def new_engine(name: str, dest: Path, class_name: str | None):
        """Create a new engine package NAME from the diffusers engine template.

        The package runs as it is (PixArt-Sigma text-to-image, with a tiny random-weight model
        and the conformance tests); change its pipeline, params, tiny builder and presets to your
        model family. docs/plugins.md describes the whole contract.

        \b
        Example:
          codex new-engine my_model --dest ./plugins
          pip install -e "./plugins/codex-my-model[test]" && pytest plugins/codex-my-model/tests
        """
        from .scaffold import new_engine as render

        folder = render(name, dest, class_name)
        click.echo(str(folder))
        click.echo(f"codex: created engine {name!r} in {folder}; install it with pip install -e \"{folder}[test]\". It "
                   "runs the template's PixArt-Sigma until you change every place marked STARTING POINT "
                   f"(grep -rn \"STARTING POINT\" {folder})", err=True)
