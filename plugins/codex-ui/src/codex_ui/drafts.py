"""One browser session's requests as they are edited (``Drafts``), how their text reaches the Request JSON
panel in order (``PANEL_FROM_FEED``), and the one queue the handlers that change them share."""

from __future__ import annotations

from typing import Any

from .forms import show_request

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
        # task -> its ControlNet units as drafted (controls.py): the enabled ones are the request's controls, a
        # disabled one keeps its settings here only
        self.units: dict[str, list[dict[str, Any]]] = {}

    def clear(self) -> None:
        super().clear()
        self.units.clear()

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
