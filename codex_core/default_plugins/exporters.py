"""The core's output formats."""

from functools import partial

from codex_core.exporters import Exporter
from codex_core.exporters.png import write_png
from codex_core.exporters.video import CONTAINERS, ffmpeg_problem, write_container, write_frames
from codex_core.hookspecs import hookimpl

VIDEO_DESCRIPTIONS = {"mp4": "MP4, H.264 yuv420p", "webm": "WebM, VP9", "gif": "animated GIF (one palette)"}


@hookimpl
def codex_register_exporters(register):
    register(Exporter("png", "image", write_png, "PNG with A1111 'parameters' and a 'codex' JSON chunk"))
    for name, container in CONTAINERS.items():
        register(Exporter(name, "video", partial(write_container, container), VIDEO_DESCRIPTIONS[name],
                          unavailable=ffmpeg_problem))
    register(Exporter("frames", "video", write_frames, "lossless PNG per frame in frames/"))
