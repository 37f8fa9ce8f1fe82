"""The ``codex`` command group: every command of the core, the plugins' commands, and how the process ends.

Commands that need no model never import torch or diffusers.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from .. import __version__
from . import batch, listing, preprocess, reference, run, serve
from .base import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="codex")
def cli():
    """Run image and video diffusion models from the command line.

    Engines come from installed plugin packages; `codex engines` lists them. ENGINE below is one
    of those keys.

    \b
    Examples:
      codex engines                                    # what is installed
      codex presets ENGINE txt2img                     # the defaults a request starts from
      codex run ENGINE txt2img --model tiny --json '{"prompt": "a red fox"}'
      codex run ENGINE txt2img --model ./models/mine --json @request.json
      codex info artifacts/images/<run-id>/0000.png    # what made an image
    """


for command in (listing.engines, listing.models, listing.plugins, reference.schema, reference.presets, reference.docs,
                listing.samplers, run.run, run.info, run.replay, batch.batch, batch.grid, serve.serve,
                preprocess.preprocess):
    cli.add_command(command)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # unwind through the same cleanup as Ctrl-C


def main(argv: list[str] | None = None) -> None:
    from ..registry import register_commands

    signal.signal(signal.SIGTERM, _on_sigterm)
    register_commands(cli)
    try:
        cli.main(args=argv, prog_name="codex")
    except SystemExit as exc:
        _exit_without_teardown(exc.code)
        raise


def _exit_without_teardown(code) -> None:
    """End a process that loaded torch at once: the exit handlers run and the streams are flushed, then
    ``os._exit`` skips the interpreter's teardown of torch, diffusers and transformers, which takes ~1.5 s
    (a fifth of a cold tiny `codex run`) and does nothing for a process that is ending. Everything codex
    writes is closed and renamed into place before this. CODEX_FULL_EXIT=1 keeps the normal exit."""
    if "torch" not in sys.modules or os.environ.get("CODEX_FULL_EXIT"):
        return
    import atexit

    if code is not None and not isinstance(code, int):  # SystemExit("message"): what Python would print
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (codex run ... | head): nothing more to say
            pass
    os._exit(code or 0)

