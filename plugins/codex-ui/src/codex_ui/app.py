"""The Gradio app: engine and model in a top bar, a tab per task, forms from the schemas, the Request
JSON panel, progress, queue and results. Every action is a call to the service API (``client``).

State kept per browser session:
- ``values``: per task, the fields the user set (the request as it will be sent): one ``Drafts`` per
  session, changed in place and never an event's output (an event's state inputs are read when it is
  queued, so a handler that returned a new dict would write back what a queued one read before an earlier
  edit); its ``show`` numbers the texts sent to the panel (see ``Drafts``);
- ``errors``: per field, what the service said about the last refused submit;
- ``rev``: bumped whenever ``values`` or ``errors`` change from code (engine switch, refused submit,
  reuse seed, send to a tab): the forms are re-rendered from it, with the values and errors shown.
"""

# no `from __future__ import annotations` here: Gradio finds event data (``evt: gr.SelectData``) by the
# annotation's object, which a postponed (string) annotation is not
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from .client import Refused, ServiceClient
from .forms import UNSET, FieldSpec, form_fields, parse_request, problems_by_field, show_request, value_of, with_value
from .pnginfo import read_parameters

# Tabs in the order people know them from A1111/Forge; a task a plugin adds comes after these.
TASK_ORDER = ("txt2img", "img2img", "inpaint", "upscale", "txt2vid", "img2vid")
QUEUE_COLUMNS = ["job", "engine", "task", "state", "position", "step", "error"]
CSS = """
.codex-error textarea, .codex-error input { border-color: #d33 !important; }
.codex-error [data-testid="block-info"], .codex-error .info, .codex-error span { color: #d33; }
#codex-progress .bar { height: 10px; background: #ddd; border-radius: 5px; overflow: hidden; }
#codex-progress .bar > div { height: 100%; background: #f97316; }
"""
KEYS_JS = (Path(__file__).with_name("keys.js")).read_text()
# Every handler that reads or changes the session's request values runs in one queue, one at a time, so
# that each sees the edits queued before it (run concurrently, two quick field edits could lose one).
ONE_AT_A_TIME = {"concurrency_id": "codex-values", "concurrency_limit": 1}


class Drafts(dict):
    """One browser session's requests: task -> the fields the user set.

    ``show`` is what a handler sends the Request JSON panel: the request's text after a number that grows
    with every text sent. Gradio applies the outputs of quick successive events in the browser in no fixed
    order (a field's output could land after the next field's), so the texts go to a hidden feed and a page
    script (``PANEL_FROM_FEED``) puts one in the panel only if its number is newer than the panel's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = 0

    def show(self, request: dict[str, Any]) -> str:
        self.sent += 1
        return f"{self.sent}\n{show_request(request)}"


# The feed's newest text into the panel; an older one (applied late) leaves the panel as it is.
PANEL_FROM_FEED = """(feed, shown) => {
  const cut = feed.indexOf("\\n");
  const number = parseInt(feed.slice(0, cut), 10);
  if (!(number > (window.codexPanelNumber || 0))) return shown;
  window.codexPanelNumber = number;
  return feed.slice(cut + 1);
}"""


def ordered_tasks(engines: dict[str, dict[str, Any]]) -> list[str]:
    found = [task for engine in engines.values() for task in engine["tasks"]]
    return [task for task in TASK_ORDER if task in found] + sorted(set(found) - set(TASK_ORDER))


def model_choices(client: ServiceClient | None, engine: dict[str, Any]) -> list[tuple[str, str]]:
    """The Model dropdown: the engine's default, its tiny test model, then its files in the models folders
    (asked of the service; ``client`` None: not yet, the page asks when it loads)."""
    choices = [(f"default ({engine.get('default_repo') or 'the engine default'})", "")]
    if engine.get("tiny_model"):
        choices.append(("tiny (random weights, for tests)", "tiny"))
    if client is None:
        return choices
    try:
        rows = client.models(engine["engine"])
    except Refused:
        rows = []
    for row in rows:
        choices.append((f"{row['name']} ({row['format']})", row["path"]))
    return choices


def progress_html(step: int | None, steps: int | None, started: float | None, stage: str | None = None) -> str:
    if not steps:
        return f"<div class='stage'>{stage or ''}</div>"
    percent = 100 * (step or 0) / steps
    eta = ""
    if step and started:
        remaining = (time.monotonic() - started) / step * (steps - step)
        eta = f" · ETA {remaining:.0f} s"
    return (f"<div class='bar'><div style='width:{percent:.0f}%'></div></div>"
            f"<div class='stage'>step {step or 0}/{steps}{eta}{' · ' + stage if stage else ''}</div>")


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """The info panel: what people look at after a run (the whole info.json is among the files)."""
    request = info.get("request", {})
    keys = ("width", "height", "num_frames", "fps", "steps", "cfg", "strength")
    shown = {
        "seed": info.get("seed"),
        "sampler": info.get("sampler_effective"), "scheduler": info.get("scheduler_effective"),
        "mode": info.get("mode"), "mode_ignored_reason": info.get("mode_ignored_reason"),
        **{key: request[key] for key in keys if key in request},
        "timings": info.get("timings"), "memory": info.get("memory"),
        "applied_preset_patch": info.get("applied_preset_patch"),
        "notes": info.get("notes") or None, "run_id": info.get("run_id"),
    }
    return {key: value for key, value in shown.items() if value is not None}


def build(client: ServiceClient, engine_rows: list[dict[str, Any]], workdir: Path,
          initial: str | None = None) -> gr.Blocks:
    """The UI for the service's engines (``/v1/engines``). ``workdir``: where result files are fetched to."""
    engines = {row["engine"]: row for row in engine_rows}
    if not engines:
        from codex_core.errors import UsageError

        raise UsageError("the service has no engines installed: there is nothing to show",
                         hint="install an engine plugin, e.g. pip install codex-sd")
    # the engine shown first: the one asked for, else the one with the most tasks (A1111's txt2img first)
    first = initial if initial in engines else min(engines, key=lambda k: (-len(engines[k]["tasks"]), k))

    page: dict[str, Any] = {}  # components the forms' handlers update, made after the forms
    with gr.Blocks(title="Codex", analytics_enabled=False) as ui:
        values = gr.State(Drafts())
        errors = gr.State({})
        rev = gr.State(0)
        current = gr.State(engines[first]["tasks"][0])
        following = gr.State(None)
        result_image = gr.State(None)
        pending = gr.State(None)  # values to apply after an engine switch (PNG Info: send to tab)

        with gr.Row(equal_height=True):
            engine = gr.Dropdown([(f"{key} — {row['family'] or ''}", key) for key, row in engines.items()],
                                 value=first, label="Engine", elem_id="codex-engine", scale=2)
            model = gr.Dropdown(model_choices(None, engines[first]), value="", label="Model",
                                allow_custom_value=True, elem_id="codex-model", scale=3,
                                info="a file from the models folders, a diffusers folder, a repo id or tiny")
            mode = gr.Dropdown(engines[first]["modes"] or ["normal"], value=None, label="Mode", scale=1,
                               elem_id="codex-mode", visible=bool(engines[first]["modes"]),
                               info="speed mode (left empty: the preset's)")

        _tabs(client, engines, engine, values, errors, rev, current, pending, ui, page)

        request_json = gr.Code("{}", language="json", label="Request JSON (exactly what Generate sends; editable)",
                               interactive=True, elem_id="codex-request", lines=6)
        with gr.Row():
            generate = gr.Button("Generate (Ctrl+Enter)", variant="primary", elem_id="codex-generate")
            interrupt = gr.Button("Interrupt (Esc)", variant="stop", elem_id="codex-interrupt")
            skip = gr.Button("Skip (Alt+Enter)", elem_id="codex-skip")
        status = gr.Markdown(elem_id="codex-status")
        # what handlers send the panel (Drafts.show), put in it by PANEL_FROM_FEED in the order it was sent
        feed = gr.Textbox(visible=False, elem_id="codex-request-feed")
        feed.change(None, [feed, request_json], [request_json], js=PANEL_FROM_FEED, show_progress="hidden")
        page.update(feed=feed, status=status)
        progress = gr.HTML(elem_id="codex-progress")
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Images", elem_id="codex-gallery", columns=4, height=360)
                video = gr.Video(label="Video", elem_id="codex-video", visible=False, autoplay=False)
                files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="codex-files")
            with gr.Column(scale=2):
                info = gr.JSON(label="Info", elem_id="codex-info")
                with gr.Row():
                    reuse_seed = gr.Button("Reuse seed", elem_id="codex-reuse-seed")
                    send_img2img = gr.Button("Send to img2img", elem_id="codex-send-img2img")
        with gr.Accordion("Queue", open=True):
            queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="codex-queue", wrap=True)
            with gr.Row():
                cancel_id = gr.Dropdown([], label="Job", elem_id="codex-cancel-id", scale=3)
                cancel = gr.Button("Cancel job", elem_id="codex-cancel", scale=1)
        timer = gr.Timer(1.0)

        # ---- engine switch: model list, modes; the tabs and forms re-render for the new engine ----
        def on_engine(key, task, pending_values, rev_value, stored):
            row = engines[key]
            task = task if task in row["tasks"] else row["tasks"][0]
            stored.clear()
            stored.update(pending_values or {})
            return [{}, rev_value + 1, task, None,
                    gr.Dropdown(choices=model_choices(client, row), value=""),
                    gr.Dropdown(choices=row["modes"] or ["normal"], value=None, visible=bool(row["modes"])),
                    stored.show(stored.get(task, {}))]

        engine.change(on_engine, [engine, current, pending, rev, values],
                      [errors, rev, current, pending, model, mode, feed], **ONE_AT_A_TIME)

        def on_mode(chosen, task, stored):
            stored[task] = request = with_value(stored.get(task, {}), "mode", chosen if chosen else UNSET)
            return stored.show(request)

        mode.input(on_mode, [mode, current, values], [feed], **ONE_AT_A_TIME)

        def on_json(text, task, stored, rev_value):
            """The panel edited by hand: its request becomes the task's, and the form shows it."""
            try:
                request = parse_request(text)
            except ValueError as exc:
                return f"⚠ {exc}", rev_value
            if request == stored.get(task, {}):
                return "", rev_value
            stored[task] = request
            return "", rev_value + 1

        # taken when the editor loses focus (Generate, a tab, Ctrl+Enter: keys.js blurs first); its .input
        # does not fire for typing, and its .change fires for our own updates too
        request_json.blur(on_json, [request_json, current, values, rev], [status, rev], **ONE_AT_A_TIME)

        # ---- generate: submit (after the field edits before it), then follow the job and show its files ----
        outputs = [errors, rev, following, status, progress, gallery, video, files, info, result_image, feed]
        names = ["errors", "rev", "following", "status", "progress", "gallery", "video", "files", "info",
                 "result_image", "feed"]

        def update(**changed):
            return {outputs[names.index(name)]: value for name, value in changed.items()}

        submitted = gr.State(None)

        def submit(key, model_value, task, text, stored, errors_now, rev_value):
            """The task's request as the panel shows it, sent; refused: each problem next to its field."""
            try:
                parse_request(text)  # the panel's own edits are in ``stored`` already; a broken panel is not
            except ValueError as exc:
                return {**update(status=f"⚠ **Not queued**: {exc}"), submitted: None}
            request = stored.get(task, {})
            spec = {"engine": key, "task": task, "request": request, "model": model_value or None}
            try:
                job = client.submit(spec)
            except Refused as exc:
                fields = [field.name for field in form_fields(client.schema(key, task))]
                found = problems_by_field(exc.problems, fields) if exc.problems else {"": exc.message}
                lines = "\n".join(f"- {line}" for line in exc.problems) or exc.message
                return {**update(errors=found, rev=rev_value + 1, progress="", feed=stored.show(request),
                                 status=f"⚠ **Not queued** ({exc.status}):\n{lines}"
                                        + (f"\n\n{exc.hint}" if exc.hint else "")), submitted: None}
            cleared = {"errors": {}, "rev": rev_value + 1} if errors_now else {}
            warnings = "".join(f"\n\n⚠ {warning}" for warning in job.get("warnings", []))
            return {**update(**cleared, following=job["id"], feed=stored.show(request),
                             progress=progress_html(None, None, None, "queued"),
                             status=f"Job `{job['id']}` queued (position {job.get('position', 1)}){warnings}"),
                    submitted: (job["id"], warnings)}

        def follow(job):
            """The job's progress from its events, then its files fetched and shown."""
            if not job:  # refused: the page keeps what submit showed
                yield update(status=gr.skip())
                return
            job_id, warnings = job
            started, stage, step, steps = None, None, None, None
            for event, data in client.events(job_id):
                if event == "step":
                    if started is None or data["step"] <= 1:
                        started = time.monotonic()  # ETA from the steps seen here, the load excluded
                    step, steps = data["step"], data["steps"]
                elif event in ("stage", "state"):
                    stage = data.get("stage") or data.get("state")
                else:
                    continue
                yield update(progress=progress_html(step, steps, started, stage),
                             status=f"Job `{job_id}` {stage or 'running'}{warnings}")
            final = client.job(job_id)
            if final["state"] != "done":
                yield update(progress="", following=None, status=f"Job `{job_id}` **{final['state']}**"
                             + (f": {final['error']}" if final.get("error") else ""))
                return
            result = final["result"]
            folder = workdir / job_id
            local = [client.download(job_id, Path(path).name, folder / Path(path).name) for path in result["files"]]
            images = [str(path) for path in local if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
            videos = [str(path) for path in local if path.suffix.lower() in (".mp4", ".webm")]
            yield update(progress=progress_html(steps, steps, None, "done") if steps else "", following=None,
                         status=f"Job `{job_id}` done: {len(local)} files{warnings}", gallery=images,
                         video=gr.Video(value=videos[0] if videos else None, visible=bool(videos)),
                         files=[str(path) for path in local], info=summary(result["info"]),
                         result_image=images[0] if images else None)

        generate.click(submit, [engine, model, current, request_json, values, errors, rev], [*outputs, submitted],
                       show_progress="hidden", **ONE_AT_A_TIME).then(
            follow, [submitted], outputs, concurrency_limit=None, show_progress="hidden")

        def cancel_job(job_id, nothing: str, done: str) -> str:
            """Esc, and the queue panel's Cancel: the service stops the job (queued: at once; running: at
            its next step)."""
            if not job_id:
                return nothing
            try:
                client.cancel(job_id)
            except Refused as exc:
                return f"⚠ {exc.message}"
            return f"Job `{job_id}`: {done}"

        interrupt.click(partial(cancel_job, nothing="Nothing to interrupt: this page follows no job.",
                                done="interrupt requested"), [following], [status], show_progress="hidden")

        def on_skip():
            running = [w["running"] for w in client.health()["workers"] if w["running"]]
            for job_id in running:
                client.cancel(job_id)
            return f"Skipped {', '.join(f'`{j}`' for j in running)}" if running else "No job is running."

        skip.click(on_skip, None, [status], show_progress="hidden")

        # ---- queue panel ----
        def refresh(chosen):
            rows, open_jobs = [], []
            for job in client.jobs(limit=30):
                spec = job["spec"]
                step = f"{job['step']}/{job['steps']}" if job.get("steps") else ""
                rows.append([job["id"], spec["engine"], spec["task"], job["state"], job.get("position") or "",
                             step, job.get("error") or ""])
                if job["state"] in ("queued", "running"):
                    open_jobs.append(job["id"])
            return rows, gr.Dropdown(choices=open_jobs, value=chosen if chosen in open_jobs else None)

        timer.tick(refresh, [cancel_id], [queue, cancel_id], show_progress="hidden")

        ui.load(refresh, [cancel_id], [queue, cancel_id], show_progress="hidden")
        ui.load(lambda key: gr.Dropdown(choices=model_choices(client, engines[key])), [engine], [model],
                show_progress="hidden")

        cancel.click(partial(cancel_job, nothing="Choose a queued or running job first.", done="cancel requested"),
                     [cancel_id], [status], show_progress="hidden")

        # ---- reuse seed, send to img2img ----
        def on_reuse(task, stored, shown, rev_value):
            if not shown or "seed" not in shown:
                return rev_value, gr.skip(), "No result with a seed yet."
            stored[task] = request = {**stored.get(task, {}), "seed": shown["seed"]}
            return rev_value + 1, stored.show(request), f"Seed {shown['seed']} reused."

        reuse_seed.click(on_reuse, [current, values, info, rev], [rev, feed, status], **ONE_AT_A_TIME)

        def on_send(key, stored, image, rev_value):
            if image is None:
                return rev_value, gr.skip(), gr.skip(), "No image result to send."
            if "img2img" not in engines[key]["tasks"]:
                return rev_value, gr.skip(), gr.skip(), f"Engine {key} has no img2img task."
            carried = {name: stored.get(prior, {}).get(name) for prior in ("txt2img",) for name in
                       ("prompt", "negative_prompt") if stored.get(prior, {}).get(name) is not None}
            stored["img2img"] = request = {**stored.get("img2img", {}), **carried, "init_image": client.upload(image)}
            return rev_value + 1, "img2img", stored.show(request), "Sent to img2img."

        send_img2img.click(on_send, [engine, values, result_image, rev],
                           [rev, current, feed, status], **ONE_AT_A_TIME)

    return ui


def _widget(client: ServiceClient, spec: FieldSpec, task: str, value: Any, error: str | None, key: str):
    """The input for one field: its current value if the user set one, else empty with the preset shown."""
    info = f"⚠ {error}" if error else spec.hint()
    common = dict(label=spec.name, info=info, elem_id=f"codex-field-{task}-{spec.name}", key=key,
                  elem_classes=["codex-error"] if error else None)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, placeholder=spec.placeholder(), **common)
    if spec.kind == "choice":
        choices = list(spec.choices)
        if value is not None and value not in choices:
            choices.append(value)
        return gr.Dropdown(choices=choices, value=value, allow_custom_value=True, **common)
    if spec.kind == "bool":
        return gr.Dropdown(choices=["true", "false"], value=None if value is None else str(value).lower(), **common)
    if spec.kind == "image":  # no info line on an image: its error and a preview-less value go below it
        del common["info"]
        # shown from the local file it was uploaded from: the service's path may be outside what the page may
        # serve (its state dir) or on another machine (--server); a path typed or read from PNG Info has none
        local = client.local_copy(value) if isinstance(value, str) else None
        widget = gr.Image(value=local, type="filepath", sources=["upload", "clipboard"], height=220, **common)
        if error:
            gr.Markdown(f"⚠ {spec.name}: {error}", elem_classes=["codex-error"])
        elif value is not None and local is None:
            gr.Markdown(f"{spec.name}: `{value}` (on the service; no preview here)")
        return widget
    if spec.kind == "json":
        return gr.Textbox(value=None if value is None else json.dumps(value), lines=2, placeholder="JSON", **common)
    return gr.Textbox(value=value, lines=3 if spec.kind == "long_text" else 1, placeholder=spec.placeholder(),
                      **common)


def _raw(spec: FieldSpec, raw: Any) -> Any:
    if spec.kind == "bool" and isinstance(raw, str) and raw in ("true", "false"):
        return raw == "true"
    return raw


def _tabs(client: ServiceClient, engines, engine, values, errors, rev, current, pending, ui, page) -> None:
    """A tab per task of the selected engine, each with its form from the engine's schema, and PNG Info.

    Rendered again when ``rev`` changes (an engine switch among others): Gradio 6 cannot hide a tab
    by an update, so the tabs are made for the engine rather than shown and hidden.
    """

    # one at a time with the value handlers: Gradio's renders are not thread-safe (two at once fail with
    # "dictionary changed size during iteration"), and a render then sees the values the handler before
    # it wrote
    @gr.render(inputs=[engine, current, values, errors, rev], triggers=[ui.load, rev.change], **ONE_AT_A_TIME)
    def tabs(key, task_now, stored, errors_now, rev_value):
        tasks = ordered_tasks({key: engines[key]})
        with gr.Tabs(selected=task_now if task_now in tasks else tasks[0], elem_id="codex-tabs"):
            for task in tasks:
                with gr.Tab(task, id=task, elem_id=f"codex-tab-{task}") as tab:
                    _form(client, key, task, stored.get(task, {}), errors_now, rev_value, values, current, page,
                          rev)
                tab.select(_on_tab(task), [values], [current, page["feed"]], **ONE_AT_A_TIME)
            with gr.Tab("PNG Info", id="pnginfo", elem_id="codex-tab-pnginfo"):
                _png_info(engines, key, values, rev, current, pending, engine, page)


def _on_tab(task: str):
    """The handler of a task's tab: the tab the user opened becomes the task Generate runs; a select event
    for a tab being left (Gradio sends them when the tabs are rendered again) changes nothing. (A closure,
    not a partial: Gradio finds ``evt`` only in a plain function's signature.)"""

    def on_select(stored: dict[str, Any], evt: gr.SelectData):
        if not evt.selected:
            return gr.skip(), gr.skip()
        return task, stored.show(stored.get(task, {}))

    return on_select


def _png_info(engines, key, values, rev, current, pending, engine, page) -> None:
    info_file = gr.File(label="A PNG or video made by Codex or A1111", type="filepath", elem_id="codex-pnginfo-file")
    info_text = gr.Textbox(label="parameters", lines=4, interactive=False, elem_id="codex-pnginfo-text")
    info_json = gr.JSON(label="request", elem_id="codex-pnginfo-request")
    info_target = gr.State(None)
    send_info = gr.Button("Send to its tab", elem_id="codex-pnginfo-send")

    def on_info_file(path):
        if not path:
            return "", None, None
        found = read_parameters(Path(path), key, set(engines))
        return found.text, found.request, found.target

    info_file.change(on_info_file, [info_file], [info_text, info_json, info_target])

    def on_send_info(target, request, stored, rev_value):
        if not target or request is None:
            return [gr.skip()] * 5 + ["Drop a PNG or video with parameters first."]
        engine_key, task = target
        if engine_key != key:  # the engine switch applies them once the new engine's tabs render
            return (rev_value, task, {task: request}, gr.Dropdown(value=engine_key), gr.skip(),
                    f"Sent to {engine_key} {task}.")
        stored[task] = dict(request)
        return rev_value + 1, task, None, gr.skip(), stored.show(request), f"Sent to {task}."

    send_info.click(on_send_info, [info_target, info_json, values, rev],
                    [rev, current, pending, engine, page["feed"], page["status"]], **ONE_AT_A_TIME)


def _form(client: ServiceClient, key: str, task: str, request: dict[str, Any], errors_now: dict[str, str],
          rev_value: int, values, current, page, rev) -> None:
    """The task's form, from the engine's schema, showing the values the user set and the last errors."""
    fields = form_fields(client.schema(key, task))
    if errors_now.get(""):
        gr.Markdown(f"⚠ {errors_now['']}", elem_classes=["codex-error"])
    masked = any(f.name == "mask_image" for f in fields)
    changed = [current, page["feed"]]  # what every field's handler updates (values: in place)
    # prompts across the page, then the images, then everything else in a grid
    rows = [[f for f in fields if f.kind == "long_text"], [f for f in fields if f.kind == "image"],
            [f for f in fields if f.kind not in ("long_text", "image")]]
    for row in rows:
        with gr.Row(equal_height=False):
            for spec in row:
                if spec.name == "init_image" and masked:
                    _inpaint_editor(client, task, values, rev, changed, errors_now, rev_value)
                    continue
                widget = _widget(client, spec, task, request.get(spec.name), errors_now.get(spec.name),
                                 key=f"{key}-{task}-{spec.name}-{rev_value}")
                if spec.kind == "image":
                    on_image = partial(_on_image, client, task, spec, rev_value)
                    widget.upload(on_image, [widget, values, rev], changed, **ONE_AT_A_TIME)
                    widget.clear(on_image, [widget, values, rev], changed, **ONE_AT_A_TIME)
                else:
                    # numbers and choices: what the user did (.input); a number's .change also fires when it
                    # mounts, with 0. Text boxes: .change, since their .input carries the text before the
                    # last keystroke; when one mounts, .change carries the text it was rendered with.
                    event = widget.change if isinstance(widget, gr.Textbox) else widget.input
                    event(partial(_on_field, task, spec, rev_value), [widget, values, rev], changed, **ONE_AT_A_TIME)


def _on_field(task: str, spec: FieldSpec, rendered: int, raw: Any, stored: dict[str, Any], rev_now: int):
    """A field's value into the task's request. An event that changes nothing changes nothing else either:
    every text box of every tab reports its value when it mounts, and such an event must not make its tab
    the task Generate runs (nor show its request). Nor does an event from a widget of an earlier render (a
    text box mounting after the values changed and the form was made again)."""
    if rev_now != rendered:
        return gr.skip(), gr.skip()
    request = with_value(stored.get(task, {}), spec.name, value_of(spec, _raw(spec, raw)))
    if request == stored.get(task, {}):
        return gr.skip(), gr.skip()
    stored[task] = request
    return task, stored.show(request)


def _on_image(client: ServiceClient, task: str, spec: FieldSpec, rendered: int, path: str | None,
              stored: dict[str, Any], rev_now: int):
    """An image uploaded (or cleared) into the task's request, as the service's path for it. A widget of an
    earlier render (cleared as the form is made again) changes nothing."""
    if rev_now != rendered:
        return gr.skip(), gr.skip()
    value = client.upload(path) if path else None
    request = with_value(stored.get(task, {}), spec.name, value_of(spec, value))
    if request == stored.get(task, {}):
        return gr.skip(), gr.skip()
    stored[task] = request
    return task, stored.show(request)


def _inpaint_editor(client, task, values, rev, changed, errors_now, rev_value):
    """init_image with the mask painted on it: "Use the painted mask" turns the brush strokes into
    mask_image (white = repaint). A button, because Gradio's editor sends no event for a brush stroke;
    a click sends the editor's current canvas."""
    error = errors_now.get("init_image") or errors_now.get("mask_image")
    editor = gr.ImageEditor(type="filepath", label="init_image (paint the area to repaint)",
                            elem_id=f"codex-field-{task}-init_image", key=f"{task}-editor-{rev_value}",
                            sources=["upload", "clipboard"], height=320,
                            elem_classes=["codex-error"] if error else None)
    use_mask = gr.Button("Use the painted mask", elem_id=f"codex-{task}-use-mask", size="sm")
    if error:
        gr.Markdown(f"⚠ {error}", elem_classes=["codex-error"])

    def on_image(edited, stored, rev_now):
        if rev_now != rev_value:  # an editor of an earlier render
            return gr.skip(), gr.skip()
        current = dict(stored.get(task, {}))
        if edited and edited.get("background"):
            current["init_image"] = client.upload(edited["background"])
        else:
            current.pop("init_image", None)
        if current == stored.get(task, {}):
            return gr.skip(), gr.skip()
        stored[task] = current
        return task, stored.show(current)

    def on_mask(edited, stored):
        from .masks import mask_from_layers

        current = dict(stored.get(task, {}))
        if edited and edited.get("background"):
            current["init_image"] = client.upload(edited["background"])
            mask = mask_from_layers(edited["background"], edited.get("layers") or [],
                                    Path(edited["background"]).parent)
            if mask is not None:
                current["mask_image"] = client.upload(mask)
        stored[task] = current
        return task, stored.show(current)

    editor.upload(on_image, [editor, values, rev], changed, **ONE_AT_A_TIME)
    editor.clear(on_image, [editor, values, rev], changed, **ONE_AT_A_TIME)
    use_mask.click(on_mask, [editor, values], changed, **ONE_AT_A_TIME)
