"""One job split across several processes, one GPU each: the ``--parallel`` value and the ranks that run it.

``--parallel ulysses=U[,ring=R][,ulysses_anything][,ring_anything]`` (or ``off``) asks for context
parallelism: every rank runs the same job and the denoiser's attention is split between them (the
diffusers kit applies it with diffusers' ``enable_parallelism``). The ranks are the processes of a
torchrun launch (``--processes N`` starts one; WORLD_SIZE/RANK/LOCAL_RANK say where a process stands)
or of a gang of Ray actors under ``codex serve --ray``, which sets the same variables. Rank 0 alone
exports and writes; the others compute with it and write nothing.

The core only parses the value and knows the ranks (the service sizes its gangs from it, torch-free);
the option itself, its checks and what it does belong to the kit that declares it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

OFF = "off"
FLAGS = ("ulysses_anything", "ring_anything")  # diffusers' options for head counts / lengths that do not divide
EXAMPLE = "ulysses=2, ulysses=4,ring=2 or off"


@dataclass(frozen=True)
class Parallel:
    """A context-parallel layout: ``ulysses`` x ``ring`` ranks."""

    ulysses: int = 1
    ring: int = 1
    ulysses_anything: bool = False
    ring_anything: bool = False

    @property
    def world_size(self) -> int:
        return self.ulysses * self.ring

    def __str__(self) -> str:
        parts = ([f"ulysses={self.ulysses}"] if self.ulysses > 1 or self.ring == 1 else []) + \
            ([f"ring={self.ring}"] if self.ring > 1 else [])
        return ",".join(parts + [flag for flag in FLAGS if getattr(self, flag)])

    def as_json(self) -> dict:
        return {"ulysses": self.ulysses, "ring": self.ring, "world_size": self.world_size,
                **{flag: True for flag in FLAGS if getattr(self, flag)}}


def parse(value: str | None) -> Parallel | None:
    """The layout ``value`` names, None for off; ValueError saying what is wrong and what is allowed."""
    text = (value or OFF).strip().lower()
    if text in (OFF, "", "none", "1"):
        return None
    degrees: dict[str, int] = {}
    flags: dict[str, bool] = {}
    for part in (p.strip() for p in text.split(",")):
        if part in FLAGS:
            flags[part] = True
            continue
        key, sep, number = part.partition("=")
        if not sep or key not in ("ulysses", "ring"):
            raise ValueError(f"{part!r} is not ulysses=N, ring=N, {' or '.join(FLAGS)}; e.g. {EXAMPLE}")
        if key in degrees:
            raise ValueError(f"{key} is given twice")
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"{key}={number!r}: a degree is a whole number of ranks, 1 or more")
        degrees[key] = int(number)
    layout = Parallel(degrees.get("ulysses", 1), degrees.get("ring", 1), **flags)
    if layout.world_size == 1:
        raise ValueError(f"{text!r} splits nothing (1 rank); say off, or e.g. {EXAMPLE}")
    return layout


def world_size(runtime) -> int:
    """How many ranks one job of ``runtime`` takes (1 without --parallel)."""
    layout = parse(getattr(runtime, "parallel", OFF))
    return layout.world_size if layout else 1


def rank() -> int:
    """This process's rank among those that launched it (0 when it is alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def writes_outputs(runtime) -> bool:
    """Whether this process exports and writes the run's outputs: always, except on the ranks after the first
    of a context-parallel run (they computed the same outputs with rank 0)."""
    return world_size(runtime) == 1 or rank() == 0


def ranks_present() -> int:
    """How many ranks the launcher started (WORLD_SIZE as torchrun and the service's Ray gangs set it; 1 alone)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def ranks_problem(runtime, launching: int | None = None) -> str | None:
    """Why the ranks there are (``launching``: the ones ``--processes`` is about to start; else WORLD_SIZE) cannot
    run ``runtime``'s layout, or None. Every rank of a layout computes a part of each attention: a missing rank
    would hang the others, an extra one would compute with nobody."""
    layout = parse(getattr(runtime, "parallel", OFF))
    present = launching if launching is not None else ranks_present()
    needed = layout.world_size if layout else 1
    if present == needed:
        return None
    if layout is None:
        return (f"{present} ranks but no --parallel layout (each rank would run the whole job alone); "
                f"give --parallel ulysses={present}, or run one process")
    there = (f"--processes gives {present}" if launching is not None else
             "this is one process" if present == 1 else f"WORLD_SIZE is {present}")
    return (f"--parallel {layout} takes {needed} ranks, {there}; run it with --processes {needed} "
            f"(or torchrun --nproc_per_node {needed})")
