"""Registers the hunyuan_video and hunyuan_video_15 engines. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import HunyuanVideo
from .v15 import HunyuanVideo15


@hookimpl
def codex_register_engines(register):
    register(HunyuanVideo())
    register(HunyuanVideo15())
