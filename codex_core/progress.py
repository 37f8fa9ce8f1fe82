"""Progress on stderr: one bar per denoising loop (step k/N, rate, ETA) and short stage messages."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, enabled: bool = True, label: str = "denoise"):
        self.enabled = enabled
        self.label = label
        self._bar = None

    def message(self, text: str) -> None:
        if self.enabled:
            print(f"codex: {text}", file=sys.stderr, flush=True)

    def step(self, done: int, total: int) -> None:
        """Record that ``done`` of ``total`` steps are finished."""
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
