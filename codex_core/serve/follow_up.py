"""A job's follow-up steps: each image a step makes goes through the next step's task, as one job.

``JobSpec.follow_up`` is a list of ``{task, request, image_field}``: the job's own run first, then for
each follow-up step and each image of the step before, the step's ``request`` with ``image_field``
(default ``init_image``) set to that image and ``seed`` to the seed it was made with (A1111's hires fix
is txt2img followed by the ``upscale`` task). The worker runs every run of the chain in one process,
with the model loaded once, and renames one run folder into place: the last step's images, numbered
in order, and an info.json that is the last step's first run's info with every image's seed
(``seeds``) and what each step ran (``follow_up``). The runs in between are not kept; a chain cut
short leaves nothing, as any run.

A step is validated when the job is submitted, as the job itself is: its request with a stand-in image
of the size the step before makes, through the CLI's prepare and every cost limit.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UsageError

MAX_STEPS = 4  # follow-up steps of one job


class FollowUp(BaseModel):
    """One step run on every image of the step before."""

    model_config = ConfigDict(extra="forbid")

    task: str
    request: dict[str, Any] = Field(default_factory=dict)
    image_field: str = "init_image"


def output_size(params) -> tuple[int, int] | None:
    """The size of the images a run with these params makes."""
    if hasattr(params, "target_size"):
        return params.target_size()
    width, height = getattr(params, "width", None), getattr(params, "height", None)
    return (width, height) if width and height else None


def check_steps(state, spec, prepared, staging: Path) -> list[dict[str, Any]]:
    """The spec's follow-up steps, each validated with a stand-in image of the size the step before makes
    (the CLI's prepare and the cost limits); their requests as stored, inline images settled into ``staging``."""
    from PIL import Image

    from ..orchestrator import RunOptions, prepare
    from .inputs import input_fields
    from .limits import check_prepared, check_raw

    steps, engine = [], prepared.engine
    if len(spec.follow_up) > MAX_STEPS:
        raise UsageError(f"follow_up: {len(spec.follow_up)} steps; a job takes at most {MAX_STEPS}")
    for index, step in enumerate(spec.follow_up):
        where = f"follow_up.{index}"
        if step.task not in engine.tasks:
            raise UsageError(f"{where}.task: engine {engine.key} has no task {step.task!r}; its tasks: "
                             f"{', '.join(engine.tasks)}")
        model = engine.params_model(step.task)
        if input_fields(model).get(step.image_field) is not True:
            raise UsageError(f"{where}.image_field: {step.image_field!r} is not an image field of {engine.key} "
                             f"{step.task}; its image fields: {', '.join(input_fields(model)) or 'none'}")
        size = output_size(prepared.params)
        if engine.output_kind(prepared.task) != "image" or size is None:
            raise UsageError(f"{where}: the step before makes no images to follow up")
        check_raw(state.settings.limits, step.request, model)
        request = state.inputs.settle(model, step.request, staging)
        stand_in = staging / f".follow-up-{index}.png"
        staging.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(stand_in)
        try:
            trial = {**request, step.image_field: str(stand_in)}
            if "seed" in model.model_fields:
                trial["seed"] = getattr(prepared.params, "seed", None) or 0
            prepared = prepare(spec.engine, step.task, trial, RunOptions(model=spec.model, out=state.settings.outputs,
                                                                          quiet=True, preset=spec.preset))
            check_prepared(state.settings.limits, engine, step.task, prepared.params)
        finally:
            stand_in.unlink(missing_ok=True)
        steps.append({"task": step.task, "request": request, "image_field": step.image_field})
    return steps


def run_chain(spec: dict[str, Any], out: Path, run_spec, on_progress=None, runtime=None, run_id: str | None = None):
    """Run a spec with follow-up steps, each run by ``run_spec`` (runner.py's): one run folder, as one run."""
    from ..orchestrator import Result
    from ..outputs import new_run_id, run_folder, write_json
    from ..registry import get_engine

    single = {key: value for key, value in spec.items() if key != "follow_up"}
    engine = get_engine(spec["engine"])
    with run_folder(out, run_id or new_run_id()) as folder:
        runs = folder.staging_dir / ".steps"
        first = run_spec(single, runs, on_progress, runtime, "0")
        images, done = _images(first), [first.info]
        for depth, step in enumerate(spec["follow_up"], 1):
            results = []
            for index, (path, seed) in enumerate(images):
                request = {**step["request"], step.get("image_field", "init_image"): str(path)}
                if seed is not None and "seed" in engine.params_model(step["task"]).model_fields:
                    request["seed"] = seed
                results.append(run_spec({**single, "task": step["task"], "request": request}, runs, on_progress,
                                        runtime, f"{depth}-{index}"))
            images, done = [pair for result in results for pair in _images(result)], [r.info for r in results]
        for index, (path, _) in enumerate(images):
            for made in sorted(path.parent.glob(f"{path.stem}.*")):  # each format the run wrote of the image
                folder.written.append(Path(shutil.copy2(made, folder.staging_dir / f"{index:04d}{made.suffix}")))
        shutil.rmtree(runs)
        info = {**done[0], "seeds": [seed for _, seed in images],
                "outputs": [str(folder.final_path(path)) for path in folder.written],
                "follow_up": [{"task": step["task"], "image_field": step.get("image_field", "init_image")}
                              for step in spec["follow_up"]], "first_run": _summary(first.info)}
        write_json(folder.staging_dir / "info.json", info)
        folder.written.append(folder.staging_dir / "info.json")
    return Result(folder.final_dir, [folder.final_path(path) for path in folder.written], info)


def _images(result) -> list[tuple[Path, int | None]]:
    """A run's images (one file each: the PNG where it wrote one) with the seed each was made with."""
    numbered: dict[str, Path] = {}
    for path in map(Path, result.files):
        if path.stem.isdigit() and path.suffix != ".json" and (path.stem not in numbered or path.suffix == ".png"):
            numbered[path.stem] = path
    seeds = result.info.get("seeds") or []
    return [(numbered[stem], seeds[index] if index < len(seeds) else result.info.get("seed"))
            for index, stem in enumerate(sorted(numbered))]


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    """What info.json keeps of the first run of a chain: what decides its pixels."""
    return {key: info.get(key) for key in ("task", "request", "seed", "seeds", "sampler_effective",
                                           "scheduler_effective", "scheduler_class", "timings")}
