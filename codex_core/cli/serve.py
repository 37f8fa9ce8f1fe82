"""`codex serve`: the service's command (the service is assembled by ``codex_core.serve.service``)."""

from __future__ import annotations

import click

from ..serve.service import build_service, listening_sockets, run_service, serve_command, serve_options
from .base import handle_errors


@serve_command(context_settings={"max_content_width": 100})
@serve_options
@handle_errors
def serve(host, port, **options):
    """Run the service: a durable job queue, the /v1 HTTP API (OpenAPI at /docs) and the A1111 API
    (/sdapi/v1, for A1111 clients as they are).

    Models stay loaded between jobs (a worker process per device). A job accepted with 202 is never
    lost: after a crash or kill and a restart, queued jobs run, and a job that was running is run
    once more (info.attempt 2). A cancel stops a running job within seconds, and stays cancelled
    across restarts; an interrupt (POST /v1/jobs/ID/interrupt, A1111's interrupt) stops it early and
    keeps the image of the step it reached. Running jobs send a preview of their latents every
    --preview-every steps. SIGTERM or Ctrl-C lets running jobs finish within --stop-grace, and
    requeues the others without counting an attempt.
    With codex-ui installed, `codex ui` runs the same service with the web UI on it.

    \b
    Examples:
      codex serve
      codex serve --port 8000 --state-dir /srv/codex --input-root ~/pictures
      CODEX_SERVE_TOKEN=secret codex serve --host 0.0.0.0 --allowed-host gpu-box.lan
      codex serve --api-auth alice:s3cret --default-model my-checkpoint.safetensors
    """
    sockets = listening_sockets(host, port)  # a port in use: refused before the queue is opened
    try:
        app = build_service(host, port, **options)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    click.echo(f"codex: serving on http://{host}:{port} (state {app.state.settings.state_dir}; API docs at /docs)",
               err=True)
    run_service(app, host, port, sockets)
