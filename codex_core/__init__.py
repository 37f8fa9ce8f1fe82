"""Codex core: plugin discovery, strict requests, presets, sampler policy, orchestration, export.

Nothing in this package knows a model family; engines arrive as plugins (entry-point group
``codex``). Importing it imports neither torch nor any other heavy library: the names below load
on first use.

The plugin API is what this package exports (``__all__``) and, for tests, the module
``codex_core.testing``; nothing else is for plugins (tests/test_plugin_api.py fails when a plugin
under plugins/ imports anything else). ``API_VERSION`` is its version: the minor number grows with
additions, the major one with a change that can break a plugin. docs/plugins.md documents it::

    from codex_core import hookimpl, Engine, Job, Plan, ImageOutput, VideoOutput, RunOption
    from codex_core import Txt2ImgParams, Img2ImgParams, ...  # params bases to subclass
"""

from __future__ import annotations

from .hookspecs import hookimpl
from .lazy import lazy_exports

__version__ = "0.1.0"
API_VERSION = "1.5"
# The modules plugins may import besides the package itself (parallel: the --parallel layout and the ranks, which
# the kit applies).
API_MODULES = ("codex_core.testing", "codex_core.parallel")

# name -> "module" that defines it, or "module:attribute" where the exported name differs; imported on first
# access (PEP 562)
_EXPORTS = {
    # the engine contract
    "Engine": "engine", "Job": "engine", "Plan": "engine", "PlanContext": "engine", "BASELINE_MODE": "engine",
    "locate_presets": "engine",
    "ImageOutput": "outputs", "VideoOutput": "outputs", "AudioTrack": "outputs",
    # request parameters
    "ParamsBase": "params", "Params": "params", "Txt2ImgParams": "params", "Img2ImgParams": "params", "EditParams": "params",
    "InpaintParams": "params", "UpscaleParams": "params", "VideoFields": "params", "Txt2VidParams": "params",
    "Img2VidParams": "params", "ImageOnlyImg2VidParams": "params", "AudioFields": "params", "ImagePath": "params", "VideoPath": "params",
    "VideoResampleFields": "params",
    # video inputs: the probe (no decoding) and the rules an engine's params apply to their video fields
    "VideoFacts": "videos", "probe_input_video": "videos:probe_video", "MAX_VIDEO_FRAMES": "videos",
    "check_matching_videos": "videos", "check_video_frames": "videos", "input_frame_count": "videos",
    "resampled_indices": "videos",
    "INPUT_FILE": "params", "STEP_RULES": "params", "image_size": "params",
    # errors
    "CodexError": "errors", "UsageError": "errors", "ParamError": "errors", "ModelNotFoundError": "errors",
    "UnknownEngineError": "errors",
    # what engines receive
    "Runtime": "runtime", "ModelSource": "sources", "SchedulerChoice": "samplers", "Progress": "progress",
    "STAGES": "progress",
    # other plugin kinds: run options, samplers, exporters
    "RunOption": "run_options", "SamplerDef": "samplers", "ScheduleType": "samplers", "SamplerName": "samplers",
    "Exporter": "exporters",
    # control images: preprocessors (codex_register_preprocessors) and the request's controls field
    "Preprocessor": "preprocessors", "PreprocessorParams": "preprocessors",
    "installed_preprocessors": "preprocessors:installed", "run_preprocessor": "preprocessors:run",
    "ControlSpec": "controls", "ControlFields": "controls", "MAX_CONTROLS": "controls",
    # what is installed
    "get_engine": "registry", "installed_engines": "registry:engines", "samplers_for": "registry",
    "installed_samplers": "registry:samplers", "installed_sampler_names": "registry:sampler_names",
    "sampler_names_for": "registry", "resolve_sampler": "samplers:resolve",
    "request_schema": "schema", "preset_values": "presets:merged",
    # model files people have (the models folders), and the codex cache folder
    "file_record": "model_files", "read_safetensors_header": "model_files", "tensor_shapes": "model_files",
    "PICKLE_SUFFIXES": "model_files", "find_model_file": "model_files:find", "lookup_model_file": "model_files:lookup",
    "model_folders": "model_files:folders", "scan_model_files": "model_files:scan", "cache_dir": "model_files",
    # a path a user gave (a request field): refused with a UsageError when no file system could hold it
    "user_path": "paths",
    # outputs: what a run wrote, read back
    "read_info": "inspect_outputs", "inspect_output": "inspect_outputs:inspect", "probe_video": "exporters.video:probe",
    "parameters_text": "exporters.png", "parse_parameters_text": "exporters.png",
    # running from Python
    "run": "orchestrator", "prepare": "orchestrator", "execute": "orchestrator", "RunOptions": "orchestrator",
    "validate_params": "params:validate",
    # commands and the service (codex_register_commands)
    "handle_errors": "cli.base", "serve_command": "serve.service", "serve_options": "serve.service",
    "build_service": "serve.service", "run_service": "serve.service", "listening_sockets": "serve.service", "check_bind": "serve.service",
    "parse_api_auth": "serve.service",
    "LOOPBACK": "serve.service",
    # lazy exports for a plugin package of its own
    "lazy_exports": "lazy",
}

__all__ = ["hookimpl", "__version__", "API_VERSION", "API_MODULES", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
