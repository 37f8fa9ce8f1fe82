"""`codex run --processes N`: one job run by N torchrun ranks together (``--parallel``), validated here first."""

from __future__ import annotations

import json
from typing import Any

from .. import run_options


def check_ranks(runtime, processes: int) -> None:
    """Refuse (exit 2) ranks that cannot run ``runtime``'s layout: ``processes`` about to be started by
    ``--processes`` (>1), else the ones torchrun started (WORLD_SIZE), when there is a layout."""
    from ..errors import UsageError
    from ..parallel import ranks_problem, world_size

    launching = processes if processes > 1 else None
    # (a plain run under torchrun, without --parallel, runs alone on each rank as it always has)
    problem = ranks_problem(runtime, launching) if launching or world_size(runtime) > 1 else None
    if problem:
        raise UsageError(problem)


def validated(engine: str, task: str, request: dict[str, Any], options) -> None:
    """The job checked here, before any rank starts: an unsplittable request exits 2 at once. A tiny model is built
    here once, not by every rank at once (its configs are then checked too)."""
    from ..orchestrator import prepare

    if options.model == "tiny":
        from .. import registry, sources
        from ..progress import Progress

        found = registry.get_engine(engine)
        found.ensure_tiny(sources.tiny_path(found, found.tiny_version), Progress(enabled=False))
    prepare(engine, task, request, options)


def run_as_ranks(engine: str, task: str, request: dict[str, Any], options, processes: int) -> int:
    """Check the request here (an unsplittable one exits 2 before any rank starts), then start ``processes`` ranks
    on the same command; torchrun's exit status (rank 0 prints the result, the others print nothing)."""
    from ..batch_ranks import launch

    validated(engine, task, request, options)
    args = ["run", engine, task, "--json", json.dumps(request)]
    for flag, value in (("--model", options.model), ("--out", options.out), ("--preset", options.preset),
                        ("--config", options.config),
                        ("--format", ",".join(options.formats) if options.formats else None)):
        if value is not None:
            args += [flag, str(value)]
    for component in options.components:
        args += ["--component", component]
    args += ["--download"] if options.download else []
    args += ["--quiet"] if options.quiet else []
    return launch(processes, args + run_options.argv(options.runtime))


def replay_as_ranks(file, engine: str, task: str, request: dict[str, Any], options, processes: int,
                    check: bool, model: str | None, download: bool) -> int:
    """`codex replay FILE --processes N`: checked here as `run_as_ranks` does, then N ranks replay FILE with the
    run options resolved here (recorded, or given)."""
    from ..batch_ranks import launch

    validated(engine, task, request, options)
    args = ["replay", str(file)] + (["--check"] if check else []) + (["--download"] if download else [])
    for flag, value in (("--model", model), ("--out", options.out)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--quiet"] if options.quiet else []
    return launch(processes, args + run_options.argv(options.runtime))
