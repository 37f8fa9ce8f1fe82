"""The core's output formats."""

from codex_core.exporters import Exporter
from codex_core.exporters.png import write_png
from codex_core.hookspecs import hookimpl


@hookimpl
def codex_register_exporters(register):
    register(Exporter("png", "image", write_png, "PNG with A1111 'parameters' and a 'codex' JSON chunk"))
