"""Codex core: plugin discovery, strict requests, presets, sampler policy, orchestration, export.

Nothing in this package knows a model family; engines arrive as plugins (entry-point group
``codex``). Importing it imports neither torch nor any other heavy library: the names below load
on first use.

The public API for engine and plugin authors::

    from codex_core import hookimpl, Engine, Job, Plan, ImageOutput, VideoOutput
    from codex_core import Txt2ImgParams, Img2ImgParams, ...  # params bases to subclass
"""

from __future__ import annotations

from .hookspecs import hookimpl
from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562)
_EXPORTS = {
    # the engine contract
    "Engine": "engine", "Job": "engine", "Plan": "engine", "PlanContext": "engine", "BASELINE_MODE": "engine",
    "locate_presets": "engine",
    "ImageOutput": "outputs", "VideoOutput": "outputs",
    # request parameters
    "ParamsBase": "params", "Params": "params", "Txt2ImgParams": "params", "Img2ImgParams": "params",
    "InpaintParams": "params", "UpscaleParams": "params", "VideoFields": "params", "Txt2VidParams": "params",
    "Img2VidParams": "params", "ImageOnlyImg2VidParams": "params", "ImagePath": "params",
    "INPUT_FILE": "params",
    # errors
    "CodexError": "errors", "UsageError": "errors", "ParamError": "errors", "ModelNotFoundError": "errors",
    "UnknownEngineError": "errors",
    # what engines receive
    "Runtime": "runtime", "ModelSource": "sources", "SchedulerChoice": "samplers", "Progress": "progress",
    # run options (codex_register_run_options)
    "RunOption": "run_options",
    # other plugin kinds
    "SamplerDef": "samplers", "ScheduleType": "samplers", "Exporter": "exporters",
    # running from Python
    "run": "orchestrator", "RunOptions": "orchestrator",
    # plugin commands
    "handle_errors": "cli.base",
}

__all__ = ["hookimpl", "__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
