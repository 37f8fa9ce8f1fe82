"""Progress on stderr: one bar per denoising loop (step k/N, rate, ETA) and short stage messages.

A ``sink`` (the service's job store) receives the same events as dicts: ``{"type": "step", "done",
"total"}`` and ``{"type": "message", "text"}``. A sink may raise to stop the run at the next step
(a cancelled job); the exception unwinds like Ctrl-C, through the run folder's cleanup.
"""

from __future__ import annotations

import sys
from typing import Any, Callable


class Progress:
    def __init__(self, enabled: bool = True, label: str = "denoise",
                 sink: Callable[[dict[str, Any]], None] | None = None):
        self.enabled = enabled
        self.label = label
        self.sink = sink
        self._bar = None

    def message(self, text: str) -> None:
        if self.sink:
            self.sink({"type": "message", "text": text})
        if self.enabled:
            print(f"codex: {text}", file=sys.stderr, flush=True)

    def step(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` steps are finished."""
        if self.sink:
            self.sink({"type": "step", "done": done, "total": total})
        if not self.enabled:
            return
        if self._bar is None or self._bar.total != total or done < self._bar.n:
            self.close()
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit="step", file=sys.stderr, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
