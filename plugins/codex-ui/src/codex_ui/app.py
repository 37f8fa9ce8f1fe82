"""The Gradio app: engine and model in a top bar, then the form (a tab per task, forms from the schemas, the
Request JSON panel) on the left and the output (run buttons, progress with live previews, results, info) on the
right, the queue below. Every action is a call to the service API (``client``).

``build`` lays the page out through a ``Page``, which holds the client, the engines, the components and the
handlers that update them; the task tabs and their forms are ``tabs.py`` (the models folders' pickers:
``pickers.py``; the ControlNet panel: ``controls.py``).

State kept per browser session:
- ``values``: per task, the fields the user set (the request as it will be sent): one ``Drafts`` per
  session, changed in place and never an event's output (an event's state inputs are read when it is
  queued, so a handler that returned a new dict would write back what a queued one read before an earlier
  edit); its ``show`` numbers the texts sent to the panel (see ``Drafts``);
- ``errors``: per field, what the service said about the last refused submit;
- ``rev``: bumped whenever ``values`` or ``errors`` change from code (engine switch, refused submit,
  reuse seed, send to a tab): the forms are re-rendered from it, with the values and errors shown.
"""

import time
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from .client import Refused, ServiceClient
from .controls import unit_problems
from .drafts import ONE_AT_A_TIME, PANEL_FROM_FEED, Drafts
from .forms import UNSET, count_problem, form_fields, parse_request, problems_by_field, with_value
from .pickers import ModelLists
from .results import PREVIEW_INTERVAL, preview_gallery, progress_html, summary
from .tabs import task_tabs

QUEUE_COLUMNS = ["job", "engine", "task", "state", "position", "step", "error"]
CSS = """
.codex-error textarea, .codex-error input { border-color: #d33 !important; }
.codex-error [data-testid="block-info"], .codex-error .info, .codex-error span { color: #d33; }
#codex-progress .bar { height: 10px; background: #ddd; border-radius: 5px; overflow: hidden; }
#codex-progress .bar > div { height: 100%; background: #f97316; }
"""
KEYS_JS = (Path(__file__).with_name("keys.js")).read_text()


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


def build(client: ServiceClient, engine_rows: list[dict[str, Any]], workdir: Path,
          initial: str | None = None) -> gr.Blocks:
    """The UI for the service's engines (``/v1/engines``). ``workdir``: where result files are fetched to."""
    engines = {row["engine"]: row for row in engine_rows}
    if not engines:
        from codex_core import UsageError

        raise UsageError("the service has no engines installed: there is nothing to show",
                         hint="install an engine plugin, e.g. pip install codex-sd")
    # the engine shown first: the one asked for, else the one with the most tasks (A1111's txt2img first)
    first = initial if initial in engines else min(engines, key=lambda k: (-len(engines[k]["tasks"]), k))

    page = Page(client, engines, workdir)
    with gr.Blocks(title="Codex", analytics_enabled=False) as ui:
        page.session_states(first)
        page.top_bar(first)
        # the form beside what it makes; in a narrow window the output goes under the form (a row's columns
        # wrap when the width left is under their min_width)
        with gr.Row(equal_height=False, elem_id="codex-main"):
            with gr.Column(scale=3, min_width=480, elem_id="codex-form"):
                task_tabs(page, ui)
                page.request_panel()
            with gr.Column(scale=2, min_width=360, elem_id="codex-output"):
                page.run_buttons()
                page.results_panel()
        page.queue_panel()
        page.wire(ui)
    return ui


# What the run handlers (``Page.submit``, ``Page.follow``) update, by name (``Page.update``).
RUN_OUTPUTS = ("errors", "rev", "following", "status", "progress", "gallery", "video", "files", "info",
               "result_image", "feed")


class Page:
    """One UI's components, top to bottom, and the handlers that update them (methods where they need the
    service's client or the engines, module-level functions where they need neither). Made once per app:
    what a browser session changes lives in its ``gr.State``s, never here."""

    def __init__(self, client: ServiceClient, engines: dict[str, dict[str, Any]], workdir: Path):
        self.client, self.engines, self.workdir = client, engines, workdir
        self.model_lists = ModelLists(client)  # the LoRAs and VAEs the pickers offer

    # ---- the layout ----
    def session_states(self, first: str) -> None:
        self.values = gr.State(Drafts())
        self.errors = gr.State({})
        self.rev = gr.State(0)
        self.current = gr.State(self.engines[first]["tasks"][0])
        self.following = gr.State(None)
        self.result_image = gr.State(None)
        self.pending = gr.State(None)  # values to apply after an engine switch (PNG Info: send to tab)

    def top_bar(self, first: str) -> None:
        engines = self.engines
        with gr.Row(equal_height=True):
            self.engine = gr.Dropdown([(f"{key} — {row['family'] or ''}", key) for key, row in engines.items()],
                                      value=first, label="Engine", elem_id="codex-engine", scale=2)
            self.model = gr.Dropdown(model_choices(None, engines[first]), value="", label="Model",
                                     allow_custom_value=True, elem_id="codex-model", scale=3,
                                     info="a file from the models folders, a diffusers folder, a repo id or tiny")
            self.mode = gr.Dropdown(engines[first]["modes"] or ["normal"], value=None, label="Mode", scale=1,
                                    elem_id="codex-mode", visible=bool(engines[first]["modes"]),
                                    info="speed mode (left empty: the preset's)")

    def request_panel(self) -> None:
        self.request_json = gr.Code("{}", language="json",
                                    label="Request JSON (exactly what Generate sends; editable)",
                                    interactive=True, elem_id="codex-request", lines=6)
        # what handlers send the panel (Drafts.show), put in it by PANEL_FROM_FEED in the order it was sent
        self.feed = gr.Textbox(visible=False, elem_id="codex-request-feed")
        self.feed.change(None, [self.feed, self.request_json], [self.request_json], js=PANEL_FROM_FEED,
                         show_progress="hidden")

    def run_buttons(self) -> None:
        """Generate; stop the job this page follows keeping its image (Interrupt) or discarding it (Cancel); stop
        the job the service is running, whoever sent it (Skip)."""
        self.generate = gr.Button("Generate (Ctrl+Enter)", variant="primary", elem_id="codex-generate")
        with gr.Row():
            self.interrupt = gr.Button("Interrupt (Esc)", variant="stop", elem_id="codex-interrupt", min_width=90)
            self.cancel_followed = gr.Button("Cancel (Shift+Esc)", elem_id="codex-cancel-followed", min_width=90)
            self.skip = gr.Button("Skip (Alt+Enter)", elem_id="codex-skip", min_width=90)
        self.status = gr.Markdown(elem_id="codex-status")

    def results_panel(self) -> None:
        self.progress = gr.HTML(elem_id="codex-progress")
        # png: a preview (a PIL image) is shown as the service made it, not re-encoded lossily
        self.gallery = gr.Gallery(label="Images", elem_id="codex-gallery", columns=2, height=420, object_fit="contain",
                                  format="png")
        # include_audio: the result player keeps a video's sound track (the MP4's AAC) as the service wrote it
        self.video = gr.Video(label="Video", elem_id="codex-video", visible=False, autoplay=False, include_audio=True)
        self.files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="codex-files")
        self.info = gr.JSON(label="Info", elem_id="codex-info")
        with gr.Row():
            self.reuse_seed = gr.Button("Reuse seed", elem_id="codex-reuse-seed")
            self.send_img2img = gr.Button("Send to img2img", elem_id="codex-send-img2img")

    def queue_panel(self) -> None:
        with gr.Accordion("Queue", open=True):
            self.queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="codex-queue", wrap=True)
            with gr.Row():
                self.cancel_id = gr.Dropdown([], label="Job", elem_id="codex-cancel-id", scale=3)
                self.cancel = gr.Button("Cancel job", elem_id="codex-cancel", scale=1)
        self.timer = gr.Timer(1.0)

    # ---- the events ----
    def wire(self, ui: gr.Blocks) -> None:
        """Every event of the page but the tabs' own (``tabs.py``)."""
        # engine switch: model list, modes; the tabs and forms re-render for the new engine
        self.engine.change(self.on_engine, [self.engine, self.current, self.pending, self.rev, self.values],
                           [self.errors, self.rev, self.current, self.pending, self.model, self.mode, self.feed],
                           **ONE_AT_A_TIME)
        self.mode.input(on_mode, [self.mode, self.current, self.values], [self.feed], **ONE_AT_A_TIME)
        # the panel is taken when the editor loses focus (Generate, a tab, Ctrl+Enter: keys.js blurs first);
        # its .input does not fire for typing, and its .change fires for our own updates too
        self.request_json.blur(on_json, [self.request_json, self.current, self.values, self.rev],
                               [self.status, self.rev], **ONE_AT_A_TIME)
        # generate: submit (after the field edits before it), then follow the job and show its files
        self.submitted = gr.State(None)  # what submit hands follow: the job's id and its warnings
        self.generate.click(self.submit, [self.engine, self.model, self.current, self.request_json, self.values,
                                          self.errors, self.rev], [*self.run_outputs(), self.submitted],
                            show_progress="hidden", **ONE_AT_A_TIME).then(
            self.follow, [self.submitted], self.run_outputs(), concurrency_limit=None, show_progress="hidden")
        self.interrupt.click(self.interrupt_job, [self.following], [self.status], show_progress="hidden")
        self.cancel_followed.click(partial(self.cancel_job, nothing="Nothing to cancel: this page follows no job.",
                                           done="cancel requested (its image is discarded)"), [self.following],
                                   [self.status], show_progress="hidden")
        self.skip.click(self.on_skip, None, [self.status], show_progress="hidden")
        # the queue panel
        self.timer.tick(self.refresh, [self.cancel_id], [self.queue, self.cancel_id], show_progress="hidden")
        ui.load(self.refresh, [self.cancel_id], [self.queue, self.cancel_id], show_progress="hidden")
        ui.load(lambda key: gr.Dropdown(choices=model_choices(self.client, self.engines[key])), [self.engine],
                [self.model], show_progress="hidden")
        self.cancel.click(partial(self.cancel_job, nothing="Choose a queued or running job first.",
                                  done="cancel requested"), [self.cancel_id], [self.status], show_progress="hidden")
        # reuse seed, send to img2img
        self.reuse_seed.click(on_reuse, [self.current, self.values, self.info, self.rev],
                              [self.rev, self.feed, self.status], **ONE_AT_A_TIME)
        self.send_img2img.click(self.on_send, [self.engine, self.values, self.result_image, self.rev],
                                [self.rev, self.current, self.feed, self.status], **ONE_AT_A_TIME)

    def run_outputs(self) -> list:
        return [getattr(self, name) for name in RUN_OUTPUTS]

    def update(self, **changed) -> dict:
        """The run handlers' outputs by name: ``update(status="...")`` -> ``{self.status: "..."}``."""
        unknown = set(changed) - set(RUN_OUTPUTS)
        if unknown:
            raise ValueError(f"not an output of the run handlers: {', '.join(sorted(unknown))}")
        return {getattr(self, name): value for name, value in changed.items()}

    # ---- the handlers ----
    def on_engine(self, key, task, pending_values, rev_value, stored):
        row = self.engines[key]
        task = task if task in row["tasks"] else row["tasks"][0]
        stored.clear()
        stored.update(pending_values or {})
        return [{}, rev_value + 1, task, None,
                gr.Dropdown(choices=model_choices(self.client, row), value=""),
                gr.Dropdown(choices=row["modes"] or ["normal"], value=None, visible=bool(row["modes"])),
                stored.show(stored.get(task, {}))]

    def submit(self, key, model_value, task, text, stored, errors_now, rev_value):
        """The task's request as the panel shows it, sent; refused: each problem next to its field."""
        update = self.update
        try:
            parse_request(text)  # the panel's own edits are in ``stored`` already; a broken panel is not
        except ValueError as exc:
            return {**update(status=f"⚠ **Not queued**: {exc}"), self.submitted: None}
        request = stored.get(task, {})
        spec = {"engine": key, "task": task, "request": request, "model": model_value or None}
        fields = form_fields(self.client.schema(key, task))
        # reference images: too few or too many is said here, from the engine's schema, before anything is sent
        counts = {field.name: problem for field in fields if field.kind == "images"
                  and (problem := count_problem(field, request.get(field.name), key))}
        if counts:
            lines = "\n".join(f"- {name}: {problem}" for name, problem in counts.items())
            return {**update(errors=counts, rev=rev_value + 1, progress="", feed=stored.show(request),
                             status=f"⚠ **Not queued**:\n{lines}"), self.submitted: None}
        try:
            job = self.client.submit(spec)
        except Refused as exc:
            found = problems_by_field(exc.problems, [field.name for field in fields]) if exc.problems \
                else {"": exc.message}
            found.update(unit_problems(exc.problems))  # each control's problems, for its unit in the panel
            lines = "\n".join(f"- {line}" for line in exc.problems) or exc.message
            return {**update(errors=found, rev=rev_value + 1, progress="", feed=stored.show(request),
                             status=f"⚠ **Not queued** ({exc.status}):\n{lines}"
                                    + (f"\n\n{exc.hint}" if exc.hint else "")), self.submitted: None}
        cleared = {"errors": {}, "rev": rev_value + 1} if errors_now else {}
        warnings = "".join(f"\n\n⚠ {warning}" for warning in job.get("warnings", []))
        return {**update(**cleared, following=job["id"], feed=stored.show(request),
                         progress=progress_html(None, None, None, "queued"),
                         status=f"Job `{job['id']}` queued (position {job.get('position', 1)}){warnings}"),
                self.submitted: (job["id"], warnings)}

    def follow(self, job):
        """The job's progress and previews from its events, then its files fetched and shown."""
        update, client = self.update, self.client
        if not job:  # refused: the page keeps what submit showed
            yield update(status=gr.skip())
            return
        job_id, warnings = job
        started, stage, step, steps, shown_at = None, None, None, None, None
        for event, data in client.events(job_id):
            if event == "preview":  # the latest only: one that comes too soon after the last shown is skipped
                if shown_at is None or time.monotonic() - shown_at >= PREVIEW_INTERVAL:
                    shown_at = time.monotonic()
                    yield update(gallery=preview_gallery(data))
                continue
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
        if final["state"] != "done":  # a preview of a job that made nothing is not left where results go
            yield update(progress="", following=None, status=f"Job `{job_id}` **{final['state']}**"
                         + (f": {final['error']}" if final.get("error") else ""),
                         gallery=[] if shown_at is not None else gr.skip())
            return
        result = final["result"]
        folder = self.workdir / job_id
        local = [client.download(job_id, Path(path).name, folder / Path(path).name) for path in result["files"]]
        images = [str(path) for path in local if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
        # the run's side images (a control's preprocessed image) after its outputs, captioned with their names
        side = {Path(record["path"]).name: stem for stem, record in (result["info"].get("side_images") or {}).items()}
        images = [path for path in images if Path(path).name not in side] + \
                 [path for path in images if Path(path).name in side]
        shown = [(path, side.get(Path(path).name)) for path in images]
        videos = [str(path) for path in local if path.suffix.lower() in (".mp4", ".webm")]
        stopped, steps = result["info"].get("interrupted_at_step"), result["info"].get("steps_planned", steps)
        done = "done" if stopped is None else f"done (interrupted at step {stopped}/{steps}: its image kept)"
        yield update(progress=progress_html(steps if stopped is None else stopped, steps, None, "done") if steps
                     else "", following=None,
                     status=f"Job `{job_id}` {done}: {len(local)} files{warnings}",
                     gallery=gr.Gallery(value=shown, columns=1 if len(images) == 1 else 2),
                     video=gr.Video(value=videos[0] if videos else None, visible=bool(videos)),
                     files=[str(path) for path in local], info=summary(result["info"]),
                     result_image=images[0] if images else None)

    def interrupt_job(self, job_id) -> str:
        """Esc: the job this page follows stops at its next step and keeps its image (the service decodes the
        latents of that step and ends it done). A job that has not started has nothing to keep: cancelled."""
        if not job_id:
            return "Nothing to interrupt: this page follows no job."
        for _ in range(2):  # a queued job may start between the refusal and the look at its state
            try:
                self.client.interrupt(job_id)
                return f"Job `{job_id}`: interrupt requested (its image is kept)"
            except Refused as exc:
                refused = exc
            if refused.status != 409:
                break
            state = self.client.job(job_id)["state"]
            if state == "queued":
                return self.cancel_job(job_id, "", "it had not started: cancelled (nothing to keep)")
            if state != "running":
                break
        return f"⚠ {refused.message}"

    def cancel_job(self, job_id, nothing: str, done: str) -> str:
        """Shift+Esc, and the queue panel's Cancel: the service stops the job and discards it (queued: at once;
        running: at its next step)."""
        if not job_id:
            return nothing
        try:
            self.client.cancel(job_id)
        except Refused as exc:
            return f"⚠ {exc.message}"
        return f"Job `{job_id}`: {done}"

    def on_skip(self):
        running = [job["id"] for job in self.client.jobs(state="running")]
        for job_id in running:
            self.client.cancel(job_id)
        return f"Skipped {', '.join(f'`{j}`' for j in running)}" if running else "No job is running."

    def refresh(self, chosen):
        # the queue panel: every job with its state, position and step; the open ones can be cancelled
        rows, open_jobs = [], []
        for job in self.client.jobs(limit=30):
            spec = job["spec"]
            step = f"{job['step']}/{job['steps']}" if job.get("steps") else ""
            rows.append([job["id"], spec["engine"], spec["task"], job["state"], job.get("position") or "",
                         step, job.get("error") or ""])
            if job["state"] in ("queued", "running"):
                open_jobs.append(job["id"])
        return rows, gr.Dropdown(choices=open_jobs, value=chosen if chosen in open_jobs else None)

    def on_send(self, key, stored, image, rev_value):
        if image is None:
            return rev_value, gr.skip(), gr.skip(), "No image result to send."
        if "img2img" not in self.engines[key]["tasks"]:
            return rev_value, gr.skip(), gr.skip(), f"Engine {key} has no img2img task."
        carried = {name: stored.get(prior, {}).get(name) for prior in ("txt2img",) for name in
                   ("prompt", "negative_prompt") if stored.get(prior, {}).get(name) is not None}
        stored["img2img"] = request = {**stored.get("img2img", {}), **carried,
                                       "init_image": self.client.upload(image)}
        return rev_value + 1, "img2img", stored.show(request), "Sent to img2img."


# ---- the handlers that need neither the client nor the engines ----
def on_mode(chosen, task, stored):
    stored[task] = request = with_value(stored.get(task, {}), "mode", chosen if chosen else UNSET)
    return stored.show(request)


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


def on_reuse(task, stored, shown, rev_value):
    if not shown or "seed" not in shown:
        return rev_value, gr.skip(), "No result with a seed yet."
    stored[task] = request = {**stored.get(task, {}), "seed": shown["seed"]}
    return rev_value + 1, stored.show(request), f"Seed {shown['seed']} reused."
