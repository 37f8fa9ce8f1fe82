"""Timing helpers the benchmarks share: interleaved rounds, the other load on the machine, and the report lines."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable


def timed(fn: Callable, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process and its children) so far."""
    with open("/proc/stat") as stat:  # Linux: user nice system idle iowait irq softirq steal ...
        ticks = [int(v) for v in stat.readline().split()[1:9]]
    own = os.times()
    return ((sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"),
            own.user + own.system + own.children_user + own.children_system)


def interleaved(sides: dict[str, Callable[[], object]], reps: int) -> tuple[dict[str, list[float]], float]:
    """Times of each side over ``reps`` alternating rounds, and the share of the CPUs others used meanwhile.

    Interleaving, with who goes first alternating, makes drift (thermal, page cache, other load) hit
    both sides alike. torch's OpenMP threads spin-wait, so other processes on the same cores make
    single runs several times slower (median >> min): the share tells how much to trust the medians.
    """
    wall0, (machine0, own0) = time.perf_counter(), cpu_seconds()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(reps):
        for name in list(sides) if i % 2 == 0 else reversed(list(sides)):
            times[name].append(timed(sides[name]))
    machine1, own1 = cpu_seconds()
    others = max(0.0, (machine1 - machine0) - (own1 - own0)) / ((time.perf_counter() - wall0) * os.cpu_count())
    return times, others


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(title: str, times: dict[str, list[float]], others: float, labels: dict[str, str]) -> None:
    # Other guests on the host can slow the cores without showing in /proc/stat: the same work then
    # takes longer (and more of our own CPU time) in some runs. The spread shows that too.
    spread = max(statistics.median(values) / min(values) for values in times.values())
    print(f"\n{title}")
    print(f"other processes used {others:.0%} of the CPUs while measuring; the same work took up to "
          f"{spread:.2f}x its fastest time (median/min)"
          + ("  (noisy machine: medians are unreliable, compare the mins)" if others > 0.1 or spread > 1.15 else ""))
    print(f"{'':<46}{'median s':>10}{'min s':>10}")
    for name, label in labels.items():
        print(f"{label:<46}{statistics.median(times[name]):>10.3f}{min(times[name]):>10.3f}")


def ratio(times: dict[str, list[float]], a: str, b: str, label: str, target: float | None) -> None:
    """Median ratio a/b against the target (None: for reference only), and the ratio of the mins."""
    median = statistics.median(times[a]) / statistics.median(times[b])
    judged = f"target <= {target}  {verdict(median <= target)}" if target else "(for reference)"
    print(f"ratio {label:<34} median {median:.3f}  min {min(times[a]) / min(times[b]):.3f}  {judged}")
