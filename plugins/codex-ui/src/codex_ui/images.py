"""An edit's reference images (an ``images`` field): a gallery that takes several uploads, in the order given (the
first is the one edited), with a line under it saying how many the engine takes and what is wrong with the count.

Each image goes to the service as the other tabs' images do (``POST /v1/inputs``, by its content); the request
holds the service's paths in the gallery's order. The count is checked here as the user adds and removes images,
and again by Generate before anything is sent (``count_problem``): the engine's limits are its schema's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from .client import Refused
from .drafts import ONE_AT_A_TIME
from .forms import UNSET, FieldSpec, count_problem, with_value

if TYPE_CHECKING:
    from .app import Page


def limit_text(spec: FieldSpec) -> str:
    """The line under the gallery when the count is right: how many the engine takes, which one is edited."""
    most = spec.max_items
    takes = f"up to {most} reference images" if most and most > 1 else "1 reference image"
    return f"{spec.name}: {takes}, in the order added; the first is the one edited and sets the output size"


def gallery_paths(value: Any) -> list[str]:
    """The gallery's files in order (Gradio hands a gallery as (path, caption) pairs)."""
    return [item[0] if isinstance(item, (tuple, list)) else item for item in value or []]


def images_field(page: "Page", key: str, task: str, spec: FieldSpec, value: Any, error: str | None,
                 rev_value: int, changed: list) -> None:
    """The gallery and its line, wired: an upload or a removal rewrites the request's list in the gallery's order."""
    listed = value if isinstance(value, list) else []
    local = [page.client.local_copy(item) if isinstance(item, str) else None for item in listed]
    gallery = gr.Gallery(value=[path for path in local if path] or None, type="filepath", interactive=True,
                         file_types=["image"], sources=["upload", "clipboard"], columns=4, height=240,
                         object_fit="contain", label=f"{spec.name} (the first is the one edited)",
                         elem_id=f"codex-field-{task}-{spec.name}", key=f"{key}-{task}-{spec.name}-{rev_value}",
                         elem_classes=["codex-error"] if error else None)
    hidden = [item for item, path in zip(listed, local) if not path]
    if hidden:  # typed in the panel or read by PNG Info: on the service, with no copy here to show
        gr.Markdown(f"{spec.name}: {', '.join(f'`{item}`' for item in hidden)} on the service (no preview here); "
                    "adding or removing an image here replaces the list with the gallery's")
    text = _note(spec, key, value, error)
    note = gr.Markdown(text, elem_id=f"codex-{task}-{spec.name}-note",
                       elem_classes=["codex-error"] if text.startswith("⚠") else None)

    def on_images(shown, stored, rev_now):
        if rev_now != rev_value:  # a gallery of an earlier render
            return gr.skip(), gr.skip(), gr.skip()
        try:
            served = [page.client.upload(path) for path in gallery_paths(shown)]
        except Refused as exc:  # not an image the service takes (over its pixel limit, not decodable): said here
            message = exc.message.removeprefix("body: ")  # the upload route names its body; here it is this field
            return gr.skip(), gr.skip(), gr.Markdown(f"⚠ {spec.name}: {message}", elem_classes=["codex-error"])
        request = with_value(stored.get(task, {}), spec.name, served or UNSET)
        text = _note(spec, key, served, None)
        line = gr.Markdown(text, elem_classes=["codex-error"] if text.startswith("⚠") else None)
        if request == stored.get(task, {}):
            return gr.skip(), gr.skip(), line
        stored[task] = request
        return task, stored.show(request), line

    # .change: after an upload, a removal (its .delete carries the list from before) and Clear (no event of its
    # own); not when the gallery mounts. An upload sends it twice: the second finds the request unchanged.
    gallery.change(on_images, [gallery, page.values, page.rev], [*changed, note], **ONE_AT_A_TIME)


def _note(spec: FieldSpec, engine: str, value: Any, error: str | None) -> str:
    if error:
        return f"⚠ {spec.name}: {error}"
    problem = count_problem(spec, value, engine) if value else None  # an empty gallery is said at Generate
    return f"⚠ {spec.name}: {problem}" if problem else limit_text(spec)
