"""Progress on stderr: one bar per denoising loop (step k/N, rate, ETA), stage lines and short messages.

A run goes through named stages (``STAGES``: load, encode, denoise, decode, export); whoever does one
announces it with ``stage(name)``. A ``sink`` (the service's job store, the batch's bars) receives the
same events as dicts: ``{"type": "stage", "stage", "text"}``, ``{"type": "step", "done", "total"}`` and
``{"type": "message", "text"}``; it acts on a stage by its name, never on a message's text. A sink may
raise to stop the run at the next event (a cancelled job); the exception unwinds like Ctrl-C, through
the run folder's cleanup.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

# The stages of a run, in order: loading the model (or finding it loaded), encoding the conditioning,
# the denoising loop, decoding latents to pixels, writing the outputs.
STAGES = ("load", "encode", "denoise", "decode", "export")


class Progress:
    def __init__(self, enabled: bool = True, label: str = "denoise",
                 sink: Callable[[dict[str, Any]], None] | None = None):
        self.enabled = enabled
        self.label = label
        self.sink = sink
        self._bar = None

    def stage(self, name: str, text: str | None = None) -> None:
        """The run enters stage ``name`` (one of ``STAGES``); ``text`` is its line on stderr, if any."""
        if name not in STAGES:
            raise ValueError(f"unknown progress stage {name!r}; the stages: {', '.join(STAGES)}")
        if self.sink:
            self.sink({"type": "stage", "stage": name, "text": text})
        if text and self.enabled:
            self.close()  # a bar in progress is done
            print(f"codex: {text}", file=sys.stderr, flush=True)

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
