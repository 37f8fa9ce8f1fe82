"""The service as the command line assembles it: `codex serve`'s options and the app they build.

`codex serve` and `codex ui` (codex-ui) take the same options and build the same service here.
"""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from pathlib import Path

import click

from ..cli.options import ServeCommand, runtime_from
from ..errors import CodexError, UsageError
from .limits import FLAGS, HELP, Limits, from_options, option_name
from .webhooks import ATTEMPTS as WEBHOOK_ATTEMPTS
from .settings import PREVIEW_EVERY
from .worker import CANCEL_GRACE, STOP_GRACE

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")  # every interface: no one name the clients use


SERVE_OPTIONS = [
    click.option("--host", default="127.0.0.1", show_default=True,
                 help="Address to bind; any but loopback needs --token or --api-auth."),
    click.option("--port", default=7861, show_default=True, type=int, help="Port to listen on."),
    click.option("--token", envvar="CODEX_SERVE_TOKEN", help="Token every route but /v1/health requires (or "
                                                             "CODEX_SERVE_TOKEN): as a Bearer token, or as the "
                                                             "password of HTTP Basic with any user name."),
    click.option("--api-auth", "api_auth", envvar="CODEX_SERVE_API_AUTH", metavar="USER:PASS[,USER:PASS]",
                 help="A1111's flag: HTTP Basic credentials every route but /v1/health accepts (or "
                      "CODEX_SERVE_API_AUTH); with --token, either is accepted."),
    click.option("--default-model", "default_model", metavar="CHECKPOINT",
                 help="The A1111 API's checkpoint at start: a title, model name, file name or short hash from "
                      "/sdapi/v1/sd-models, or tiny-ENGINE [default: the one last chosen with POST /sdapi/v1/options, "
                      "else the first checkpoint found]."),
    click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without --token (anyone on the network "
                                                  "can run jobs)."),
    click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
                 help="A name clients may reach the service by (the Host header) besides its loopback names and "
                      "--host (repeatable; '*' turns the check off)."),
    click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("codex-serve"),
                 show_default=True, help="The job database, inputs and outputs."),
    click.option("--input-root", "input_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                 help="A folder requests may name files in (repeatable); the models roots are always readable."),
    click.option("--max-body-bytes", default=64 * 1024 * 1024, show_default=True, type=int),
    # what one job may cost (codex_core.serve.limits): a request over a limit is a 422 naming it
    *[click.option(FLAGS[limit.name], default=limit.default, show_default=True, type=click.IntRange(1),
                   help=HELP[limit.name]) for limit in dataclass_fields(Limits)],
    click.option("--max-queue", default=100, show_default=True, type=int, help="Queued jobs before 429."),
    click.option("--devices", default="auto", show_default=True,
                 help="One worker per device, comma separated (e.g. cuda:0,cuda:1); auto: the best device."),
    click.option("--ray", "ray", metavar="ADDRESS",
                 help="Run the workers as Ray actors anywhere in the Ray cluster at ADDRESS (e.g. 10.0.0.1:6379, or "
                      "auto: the cluster this machine joined): one GPU each (--devices auto, cuda or cpu), spread over "
                      "its nodes; needs pip install 'codex-core[ray]' (docs/scaling.md)."),
    click.option("--ray-workers", "ray_workers", type=click.IntRange(1, 4096), metavar="N",
                 help="With --ray: how many workers [default: one per GPU of the cluster (per N GPUs with "
                      "--parallel); with --devices cpu, one per node]."),
    click.option("--ray-node-ip", "ray_node_ip", metavar="ADDRESS",
                 help="With --ray: this machine's address in the cluster, when Ray would pick the wrong one (e.g. "
                      "127.0.0.1 on a machine that may only talk to loopback)."),
    click.option("--cancel-grace", default=CANCEL_GRACE, show_default=True, type=click.FloatRange(0, 600),
                 metavar="SECONDS", help="A cancelled job stops at its next step; one that reaches none within this "
                                         "is stopped by killing its worker process (its model then loads again)."),
    click.option("--stop-grace", default=STOP_GRACE, show_default=True, type=click.FloatRange(0, 3600),
                 metavar="SECONDS", help="On SIGTERM or Ctrl-C, running jobs may finish within this; those that take "
                                         "longer go back to the queue (no attempt counted) and run first at the "
                                         "next start."),
    click.option("--webhook-url", metavar="URL", help="POST every job's end (done, failed, cancelled) here too, "
                                                      "besides a job's own callback_url (signed; see --webhook-secret)."),
    click.option("--webhook-secret", envvar="CODEX_WEBHOOK_SECRET", metavar="SECRET",
                 help="The Standard Webhooks secret that signs deliveries (whsec_ + base64; or CODEX_WEBHOOK_SECRET); "
                      "default: one made at the first start, in STATE_DIR/webhook-secret."),
    click.option("--webhook-allow-host", "webhook_allow_hosts", multiple=True, metavar="NAME|ADDRESS|CIDR",
                 help="Callback URLs may go only to these hosts (repeatable); default: any but link-local (cloud "
                      "metadata), multicast and reserved addresses."),
    click.option("--webhook-attempts", default=WEBHOOK_ATTEMPTS, show_default=True, type=click.IntRange(1, 50),
                 help="Tries of one delivery (after 2, 8, 32 s... at most an hour apart), then it is failed."),
    click.option("--openai-default-model", "openai_image_model", metavar="MODEL",
                 help="What the OpenAI API runs for OpenAI's image model names (gpt-image-1, dall-e-3...) and when a "
                      "request names none: an engine key, a checkpoint name from the models folders, or tiny-ENGINE."),
    click.option("--openai-default-video-model", "openai_video_model", metavar="MODEL",
                 help="The same for the videos API (sora-2, sora-2-pro, or no model given)."),
    click.option("--preview-every", default=PREVIEW_EVERY, show_default=True, type=click.IntRange(0, 10_000),
                 metavar="STEPS", help="A preview of a running job's latents every this many steps (a small PNG in "
                                       "its event stream and A1111's progress current_image); 0: none."),
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


LIMIT_OPTIONS = {option_name(limit.name) for limit in dataclass_fields(Limits)}


def parse_api_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """``--api-auth``: comma-separated USER:PASS pairs (the password may hold colons, as HTTP Basic allows)."""
    pairs = []
    for index, entry in enumerate((text or "").split(",") if text else ()):
        user, colon, password = entry.strip().partition(":")
        if not colon or not user or not password:
            raise UsageError(f"--api-auth: entry {index + 1} is not USER:PASSWORD (both non-empty)",
                             hint="e.g. --api-auth alice:s3cret,bob:0ther; a comma separates pairs")
        pairs.append((user, password))
    return tuple(pairs)


def check_bind(host: str, token: str | None, insecure: bool, api_auth: str | None = None) -> None:
    """A non-loopback bind needs a token or --api-auth credentials, or --insecure (with a warning)."""
    if host not in LOOPBACK and not token and not api_auth:
        if not insecure:
            raise UsageError(f"--host {host}: binding a non-loopback address needs --token (or CODEX_SERVE_TOKEN) "
                             "or --api-auth USER:PASS",
                             hint="pass --token SECRET or --api-auth USER:PASS, or --insecure to let anyone on the "
                                  "network run jobs")
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


def build_service(host, port, token, insecure, state_dir, input_roots, max_body_bytes, max_queue, devices,
                  cancel_grace=CANCEL_GRACE, stop_grace=STOP_GRACE, allowed_hosts=(), webhook_url=None,
                  webhook_secret=None, webhook_allow_hosts=(), webhook_attempts=WEBHOOK_ATTEMPTS,
                  openai_image_model=None, openai_video_model=None, preview_every=PREVIEW_EVERY, api_auth=None,
                  default_model=None, ray=None, ray_workers=None, ray_node_ip=None, **given):
    """The service app from `codex serve`'s options, checked (UsageError names the option)."""
    try:
        import uvicorn  # noqa: F401  (checked here: the service cannot run without it)

        from .app import create_app
        from .settings import Settings
    except ImportError as exc:
        raise UsageError(f"codex serve needs the service packages ({exc.name} is missing)",
                         hint="pip install 'codex-core[serve]'") from None
    credentials = parse_api_auth(api_auth)
    check_bind(host, token, insecure, api_auth)
    limits = from_options(given)
    runtime = runtime_from({k: v for k, v in given.items() if k not in LIMIT_OPTIONS}, "serve")  # each its device
    from ..parallel import world_size

    world = world_size(runtime)
    ray_workers_of = None
    if ray is None:
        for name, value in (("--ray-workers", ray_workers), ("--ray-node-ip", ray_node_ip)):
            if value is not None:
                raise UsageError(f"{name} {value}: it needs --ray ADDRESS (the Ray cluster the workers run in)")
        if world > 1:
            raise UsageError(f"--parallel {runtime.parallel}: a served job split over {world} GPUs runs on a gang of "
                             "Ray workers on one node", hint="start a Ray cluster and pass --ray ADDRESS (see "
                                                             "docs/scaling.md), or serve without --parallel")
        device_list = [device.strip() for device in devices.split(",") if device.strip()]
        for device in device_list:
            runtime.replace(device=device).check()
        if len(set(device_list)) != len(device_list) or not device_list:
            raise UsageError(f"--devices: {devices!r}: give each device once (workers on one device would share, "
                             "and race on, its loaded models)")
    else:
        from .ray_runner import connect

        kind, device_list = connect(ray, ray_node_ip, devices, ray_workers, world)
        runtime = runtime.replace(device=kind)
        runtime.check()
        ray_workers_of = {"address": ray, "kind": kind, "world": world}
    settings = Settings(state_dir.resolve(), token, [Path(root).expanduser() for root in input_roots],
                        max_body_bytes=max_body_bytes, limits=limits, max_queue=max_queue, devices=device_list,
                        runtime=runtime, cancel_grace=cancel_grace, stop_grace=stop_grace,
                        allowed_hosts=[*allowed_hosts, *([] if host in LOOPBACK else [host])], api_auth=credentials,
                        default_model=default_model,
                        webhook_url=webhook_url, webhook_secret=webhook_secret,
                        webhook_allow_hosts=list(webhook_allow_hosts), webhook_attempts=webhook_attempts,
                        openai_image_model=openai_image_model, openai_video_model=openai_video_model,
                        preview_every=preview_every, ray=ray_workers_of)
    check_webhooks(settings)
    from .openai_compat import check_defaults

    check_defaults(openai_image_model, openai_video_model)
    if host in WILDCARDS and "*" not in allowed_hosts:
        click.echo(f"codex: --host {host}: requests must name the service by a loopback name"
                   f"{' or ' + ', '.join(allowed_hosts) if allowed_hosts else ''}; add the names clients use "
                   "with --allowed-host NAME", err=True)
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


def check_webhooks(settings) -> None:
    """--webhook-url is an http(s) URL (the operator's: no address rules) and --webhook-secret a usable secret."""
    from .webhooks import signing_key, url_problem

    problem = url_problem(settings.webhook_url, "--webhook-url") if settings.webhook_url is not None else None
    if problem:
        raise UsageError(problem)
    if settings.webhook_secret is not None:
        signing_key(settings.webhook_secret)


def run_service(app, host: str, port: int, sockets: list | None = None) -> None:
    """Serve ``app`` until SIGTERM or Ctrl-C, on ``sockets`` when given (``listening_sockets``, bound before
    the app was built). The signal starts the workers' stop at once, so that running jobs get
    ``--stop-grace`` from it, while open connections (event streams, A1111 calls waiting for a job) get as
    long to end; a second Ctrl-C stops at once."""
    import uvicorn

    workers = getattr(app.state, "workers", None)  # none for a UI in front of a service elsewhere
    grace = app.state.settings.stop_grace if workers is not None else 5.0

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if workers is not None:
                workers.begin_stop()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                   timeout_graceful_shutdown=max(1, round(grace))))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # the signal, raised again once the server has stopped (as uvicorn.run does)
        return
    if not server.started:
        raise CodexError("the service did not start (its log lines above say why)")
