"""Progress on stderr: one bar per denoising loop (step k/N, rate, ETA), stage lines and short messages.

A run goes through named stages (``STAGES``: load, encode, denoise, decode, export); whoever does one
announces it with ``stage(name)``. A ``sink`` (the service's job store, the batch's bars) receives the
same events as dicts: ``{"type": "stage", "stage", "text"}``, ``{"type": "step", "done", "total"}``,
``{"type": "message", "text"}`` and, when asked for (``preview_every``), ``{"type": "preview", "step", "total",
"png", "width", "height"}`` (``png``: the bytes of a small PNG of the latents at that step, made by the engine);
it acts on a stage by its name, never on a message's text. A sink may raise to stop the run at the next event
(a cancelled job); the exception unwinds like Ctrl-C, through the run folder's cleanup.

A run may also be asked to stop early and keep what it has (``stop_early``, a callable the engine polls
between steps): the engine then skips the remaining steps and decodes the latents as they are.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

# The stages of a run, in order: loading the model (or finding it loaded), encoding the conditioning,
# the denoising loop, decoding latents to pixels, writing the outputs.
STAGES = ("load", "encode", "denoise", "decode", "export")


class Progress:
    def __init__(self, enabled: bool = True, label: str = "denoise",
                 sink: Callable[[dict[str, Any]], None] | None = None, preview_every: int = 0,
                 stop_early: Callable[[], bool] | None = None):
        self.enabled = enabled
        self.label = label
        self.sink = sink
        # a preview of the latents every this many steps, for the sink (0: none; nothing else shows them)
        self.preview_every = preview_every if sink else 0
        self.stop_early = stop_early
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

    def preview_due(self, done: int, total: int) -> bool:
        """Whether step ``done`` of ``total`` gets a preview (never the last: the decoded image follows it)."""
        return self.preview_every > 0 and done % self.preview_every == 0 and done < total

    def preview(self, done: int, total: int, png: bytes, width: int, height: int) -> None:
        if self.sink:
            self.sink({"type": "preview", "step": done, "total": total, "png": png, "width": width, "height": height})

    def stop_requested(self) -> bool:
        """Whether the run was asked to stop early and keep what it has (see the module docstring)."""
        return bool(self.stop_early and self.stop_early())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
