"""`codex ui`: the service (`codex serve`, same options) with the web UI on the same port, or the UI
alone in front of a service elsewhere (``--server URL``)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from codex_core import (LOOPBACK, UsageError, build_service, check_bind, handle_errors, listening_sockets,
                        parse_api_auth, run_service, serve_command, serve_options)


@serve_command(context_settings={"max_content_width": 100})
@serve_options
@click.option("--engine", "initial", metavar="KEY", help="The engine shown first [default: the one with the most "
                                                         "tasks].")
@click.option("--server", metavar="URL", help="A running `codex serve` to use instead of starting one here "
                                              "(its --token goes in --token).")
@handle_errors
def ui(host, port, token, insecure, state_dir, server, initial, api_auth, **options):
    """Run the web UI: engines and models in a top bar, a tab per task, forms from each engine's schema,
    the request as JSON, progress, the queue and the results (images, videos, info).

    By default it runs the service here too, on the same port (its /v1 API, the A1111 API, /docs):
    the UI is at /, a client of that API. With --server it runs the UI only, in front of a service
    elsewhere. Keys: Ctrl+Enter generates, Esc interrupts (the job stops and keeps its image), Shift+Esc
    cancels (discarded), Alt+Enter skips the running job. A running job's preview (--preview-every) shows
    where its images will be.

    \b
    Examples:
      codex ui                                   # http://127.0.0.1:7861
      codex ui --port 7860 --input-root ~/pictures
      codex ui --server http://gpu-box:7861 --token SECRET --port 7860
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network unless asked
    from .app import CSS, KEYS_JS, build
    from .client import Refused, ServiceClient

    credentials = parse_api_auth(api_auth)  # the UI sends the service the first pair (without a token)

    if server:
        check_bind(host, token, insecure, api_auth)
        sockets = listening_sockets(host, port)  # a port in use: refused before anything else
        from fastapi import FastAPI

        app = FastAPI(title="Codex UI")
        client = ServiceClient(server, token, credentials[0] if credentials else None)
        try:
            engines = client.engines()
        except Refused as exc:
            raise UsageError(f"--server {server}: {exc.status}: {exc.message}") from None
        except Exception as exc:  # noqa: BLE001  (httpx's connection errors: say where and why)
            raise UsageError(f"--server: cannot reach {server} ({exc})",
                             hint="is `codex serve` running there? (it binds 127.0.0.1:7861 by default)") from None
        workdir = Path(state_dir).resolve() / "ui-files"
    else:
        from codex_core import installed_engines as installed

        # the same list /v1/engines serves; read here because the service answers only once it runs
        engines = [engine.describe() for engine in installed().values()]
        if not engines:
            raise UsageError("no engines installed: the UI would have nothing to run",
                             hint="install an engine plugin, e.g. pip install codex-sd")
        _check_initial(initial, engines)
        sockets = listening_sockets(host, port)  # a port in use: refused before the queue is opened
        try:
            app = build_service(host, port, token, insecure, state_dir, api_auth=api_auth, **options)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        loopback = host if host in LOOPBACK else "127.0.0.1"
        client = ServiceClient(f"http://{'[::1]' if loopback == '::1' else loopback}:{port}", token,
                               credentials[0] if credentials else None)
        workdir = app.state.settings.state_dir / "ui-files"
    workdir.mkdir(parents=True, exist_ok=True)
    import gradio as gr

    _check_initial(initial, engines)
    blocks = build(client, engines, workdir, initial)
    # the pages need what the API needs: the token (any user name) or an --api-auth pair
    auth = ([("codex", token)] if token else []) + list(credentials) or None
    gr.mount_gradio_app(app, blocks, path="/", allowed_paths=[str(workdir)], auth=auth, ssr_mode=False,
                        css=CSS, head=f"<script>{KEYS_JS}</script>", theme=_theme(gr), footer_links=["api"])
    where = f"http://{host}:{port}"
    click.echo(f"codex: UI on {where}/" + (f" (service {server})" if server else
                                            f" (service API on the same port, state {workdir.parent})"), err=True)
    run_service(app, host, port, sockets)


def _theme(gr):
    """Gradio's default theme with the system fonts (its own fetches Google Fonts: no network unless asked)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _check_initial(initial: str | None, engines: list[dict]) -> None:
    if initial and initial not in {row["engine"] for row in engines}:
        raise UsageError(f"--engine: {initial!r} is not an installed engine; installed: "
                         f"{', '.join(row['engine'] for row in engines)}")
