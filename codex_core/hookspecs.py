"""The plugin surface. Every hook takes a ``register`` callback (or the CLI group)."""

import pluggy

hookspec = pluggy.HookspecMarker("codex")
hookimpl = pluggy.HookimplMarker("codex")


@hookspec
def codex_register_engines(register):
    """Register engines: ``register(MyEngine())`` once per engine key (a ``codex_core.Engine`` instance)."""


@hookspec
def codex_register_samplers(register):
    """Register sampler names: ``register(SamplerDef(...))``, ``register(ScheduleType(...))`` or
    ``register(SamplerName(...))`` (another tool's name for them)."""


@hookspec
def codex_register_exporters(register):
    """Register output writers: ``register(Exporter(...))`` keyed by its format name."""


@hookspec
def codex_register_run_options(register):
    """Register run options: ``register(RunOption(...))`` once per option (how a model is placed and run)."""


@hookspec
def codex_register_preprocessors(register):
    """Register control-image preprocessors: ``register(Preprocessor(...))`` once per name (canny, depth, ...)."""


@hookspec
def codex_register_commands(cli):
    """Add commands to the ``codex`` click group."""
