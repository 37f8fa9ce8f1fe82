"""The service as the command line assembles it: `codex serve`'s options and the app they build.

`codex serve` and `codex ui` (codex-ui) take the same options and build the same service here.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..cli.options import ServeCommand, runtime_from
from ..errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


SERVE_OPTIONS = [
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; any but loopback needs --token."),
    click.option("--port", default=7861, show_default=True, type=int, help="Port to listen on."),
    click.option("--token", envvar="CODEX_SERVE_TOKEN", help="Bearer token every route but /v1/health requires "
                                                             "(or CODEX_SERVE_TOKEN)."),
    click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without --token (anyone on the network "
                                                  "can run jobs)."),
    click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("codex-serve"),
                 show_default=True, help="The job database, inputs and outputs."),
    click.option("--input-root", "input_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                 help="A folder requests may name files in (repeatable); the models roots are always readable."),
    click.option("--max-body-bytes", default=64 * 1024 * 1024, show_default=True, type=int),
    click.option("--max-image-pixels", default=16384 * 16384, show_default=True, type=int),
    click.option("--max-batch-size", default=8, show_default=True, type=int),
    click.option("--max-queue", default=100, show_default=True, type=int, help="Queued jobs before 429."),
    click.option("--devices", default="auto", show_default=True,
                 help="One worker per device, comma separated (e.g. cuda:0,cuda:1); auto: the best device."),
]


def serve_command(**settings):
    """``click.command`` for a command that runs the service (`codex serve`, `codex ui`): with ``serve_options``
    it takes the service's options, then how its workers run models (the run options but --device, which
    --devices gives, and --allow-pickle: a served request never loads pickle weights)."""
    return click.command(cls=ServeCommand, **settings)


def serve_options(command):
    """The service's own options (``serve_command`` adds the workers' run options)."""
    for option in reversed(SERVE_OPTIONS):
        command = option(command)
    return command


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """A non-loopback bind needs a token, or --insecure (with a warning)."""
    if host not in LOOPBACK and not token:
        if not insecure:
            raise UsageError(f"--host {host}: binding a non-loopback address needs --token (or CODEX_SERVE_TOKEN)",
                             hint="pass --token SECRET, or --insecure to let anyone on the network run jobs")
        click.echo(f"codex: WARNING: serving on {host} WITHOUT A TOKEN (--insecure): anyone who can reach "
                   "this port can run jobs and read their outputs", err=True)


def listening_sockets(host: str, port: int) -> list:
    """The sockets the service will listen on, bound now (every address of ``host``, as uvicorn would bind them):
    a port in use, or a host that is not this machine's, is a usage error before the job queue is opened."""
    import errno
    import socket

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: a port is a number from 0 to 65535")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"--host {host}: not an address this machine has ({exc})",
                         hint="e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every address)") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: {host}:{port} is in use by another program (another codex serve?)",
                             hint="stop it, or pass another --port") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"--port {port}: no permission to listen on it (ports below 1024 need privileges)",
                             hint="pass a --port above 1023") from None
        raise UsageError(f"--host {host}: cannot listen there ({exc.strerror or exc})",
                         hint="e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every address)") from None
    return sockets


def build_service(host, port, token, insecure, state_dir, input_roots, max_body_bytes, max_image_pixels,
                  max_batch_size, max_queue, devices, **runtime_given):
    """The service app from `codex serve`'s options, checked (UsageError names the option)."""
    try:
        import uvicorn  # noqa: F401  (checked here: the service cannot run without it)

        from .app import create_app
        from .settings import Settings
    except ImportError as exc:
        raise UsageError(f"codex serve needs the service packages ({exc.name} is missing)",
                         hint="pip install 'codex-core[serve]'") from None
    check_bind(host, token, insecure)
    runtime = runtime_from(runtime_given, "serve")  # the workers', each on its own device
    device_list = [device.strip() for device in devices.split(",") if device.strip()]
    for device in device_list:
        runtime.replace(device=device).check()
    if len(set(device_list)) != len(device_list) or not device_list:
        raise UsageError(f"--devices: {devices!r}: give each device once (workers on one device would share, and "
                         "race on, its loaded models)")
    settings = Settings(state_dir.resolve(), token, [Path(root).expanduser() for root in input_roots],
                        max_body_bytes, max_image_pixels, max_batch_size, max_queue, device_list, runtime)
    import sqlite3

    try:
        app = create_app(settings)
    except sqlite3.DatabaseError as exc:  # not a SQLite file, damaged, or held locked past the busy timeout
        raise UsageError(f"--state-dir {state_dir}: {settings.state_dir / 'jobs.sqlite3'} cannot be used as the job "
                         f"database ({exc})", hint="if another program holds it, stop that program; if it is not a "
                         "codex job database, move it aside (codex serve starts an empty one) or pass another "
                         "--state-dir") from None
    except OSError as exc:  # the state dir cannot be made or written
        raise UsageError(f"--state-dir {state_dir}: {exc.filename or state_dir}: {exc.strerror or exc}",
                         hint="pass a --state-dir you can write") from None
    for entry in app.state.recovered:
        click.echo(f"codex: job {entry['id']} was running when the service stopped: {entry['action']}", err=True)
    return app
