"""`codex run --processes N`: one job run by N torchrun ranks together (``--parallel``), validated here first."""

from __future__ import annotations

import json
from typing import Any

from .. import run_options


def run_as_ranks(engine: str, task: str, request: dict[str, Any], options, processes: int) -> int:
    """Check the request here (an unsplittable one exits 2 before any rank starts), then start ``processes`` ranks
    on the same command; torchrun's exit status (rank 0 prints the result, the others print nothing)."""
    from ..batch_ranks import launch
    from ..orchestrator import prepare

    if options.model == "tiny":  # built once here, not by every rank at once; its configs are then checked too
        from .. import registry, sources
        from ..progress import Progress

        found = registry.get_engine(engine)
        found.ensure_tiny(sources.tiny_path(found, found.tiny_version), Progress(enabled=False))
    prepare(engine, task, request, options)
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
