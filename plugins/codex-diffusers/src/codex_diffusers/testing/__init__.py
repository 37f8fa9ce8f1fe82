"""The conformance suite every diffusers engine's tests subclass, and helpers for reference calls.

A plugin's test module does::

    from codex_diffusers.testing import EngineConformance, pytest_generate_tests  # noqa: F401

    class TestMine(EngineConformance):
        engine = "mine"
        cases = {"txt2img": {...}, ...}          # small requests, one per task
        bad_requests = [(id, task, request, text the error must contain), ...]
        def direct(self, task, request, model_dir): ...  # the same call made on diffusers directly

and gets, for every task: our output equals the direct diffusers call to the pixel (and again after
another run with a different sampler: nothing leaks between runs), the run is recorded faithfully in
info.json and the PNG or video, and bad requests exit 2 naming the field with nothing written. The
declaration is checked against the pipeline too (``codex_diffusers.testing.checks``): a size at an odd
multiple of ``size_multiple`` runs at that size, every field the engine adds reaches the pipeline
(``field_changes`` gives a value where the check cannot pick one, ``fields_exempt`` says why a field is
checked elsewhere), and every preset file of every variant validates.

``codex_diffusers.testing.checkpoint_writers`` writes the files users bring (single-file checkpoints,
LoRA and GGUF layouts) from tiny model folders: test data, which no runtime module imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from codex_core import get_engine, samplers_for
from codex_core.testing import cli_run, run_json, tiny_model_dir, write_test_image

__all__ = ["EngineConformance", "pytest_generate_tests", "pixels", "direct_pipe", "seed_generators", "cli_run",
           "refused_run", "run_json", "tiny_model_dir", "write_test_image"]


def pixels(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(image.convert("RGB"), dtype=np.int16)


_direct_pipes: dict = {}


def direct_pipe(pipeline_cls, folder: Path, **overrides):
    """A pipeline loaded straight from ``folder`` with diffusers (fp32, CPU), once per class, folder and
    overrides, with the checkpoint's own scheduler config: the reference side of a conformance test.

    Returns (pipeline, scheduler config). Tests set their own scheduler on it before each call."""
    key = (pipeline_cls, str(folder), tuple(sorted(overrides.items(), key=lambda item: item[0])))
    if key not in _direct_pipes:
        pipe = pipeline_cls.from_pretrained(folder, **overrides)
        pipe.set_progress_bar_config(disable=True)
        _direct_pipes[key] = (pipe, dict(pipe.scheduler.config))
    return _direct_pipes[key]


def seed_generators(request: dict[str, Any]):
    """The ``generator`` argument of a direct call for ``request``, by the kit's rule
    (``codex_diffusers.pipelines.generators``): for a batch one generator per image, from seed + i (A1111's
    rule), else one generator of the seed."""
    import torch

    batch = request.get("batch_size") or 1
    if batch > 1:
        return [torch.Generator("cpu").manual_seed(request["seed"] + index) for index in range(batch)]
    return torch.Generator("cpu").manual_seed(request["seed"])


def pytest_generate_tests(metafunc):
    """Parametrise conformance tests over the subclass's tasks and bad requests."""
    cls = metafunc.cls
    if cls is None or not issubclass(cls, EngineConformance):
        return
    if "task" in metafunc.fixturenames:
        metafunc.parametrize("task", list(cls.cases))
    if "bad_case" in metafunc.fixturenames:
        metafunc.parametrize("bad_case", cls.bad_requests, ids=[c[0] for c in cls.bad_requests])


def assert_same_pixels(ours: list, expected: list, arguments: Any = None) -> None:
    """Each output equals diffusers' to the pixel; a failure says by how much, where, and (``arguments``: what
    codex passed to the pipeline) with which arguments, to compare with the direct call's."""
    called = f"\ncodex called the pipeline with: {arguments}" if arguments is not None else ""
    assert len(ours) == len(expected), f"{len(ours)} outputs, diffusers made {len(expected)}{called}"
    for index, (mine, theirs) in enumerate(zip(ours, expected)):
        a, b = pixels(mine), pixels(theirs)
        assert a.shape == b.shape, f"output {index}: codex made {a.shape}, diffusers {b.shape}{called}"
        if not np.array_equal(a, b):
            difference = np.abs(a - b)
            raise AssertionError(
                f"output {index} ({mine}) differs from diffusers: max pixel difference {difference.max()}, "
                f"{int((difference.max(axis=-1) > 0).sum())} of {a.shape[0] * a.shape[1]} pixels differ, mean "
                f"{difference.mean():.3f}{called}")


def with_tmp(value: Any, tmp_path: Path) -> Any:
    """``value`` with ``{tmp}`` in every string (in lists and dicts too) replaced by ``tmp_path``."""
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp_path))
    if isinstance(value, list):
        return [with_tmp(item, tmp_path) for item in value]
    if isinstance(value, dict):
        return {key: with_tmp(item, tmp_path) for key, item in value.items()}
    return value


class EngineConformance:
    engine: str = ""
    cases: dict[str, dict[str, Any]] = {}
    # (id, task, request, text the error must contain)
    bad_requests: list[tuple[str, str, dict[str, Any], str]] = []
    # the field check: field -> a value to change it to, or (value, other request entries it needs)
    field_changes: dict[str, Any] = {}
    # the field check: field -> why it is not checked here (the kit's own mixin fields are left out already)
    fields_exempt: dict[str, str] = {}
    # fields of a case that the stride check leaves out (they would decide the size instead of width/height)
    stride_drops: tuple[str, ...] = ()

    def direct(self, task: str, request: dict[str, Any], model_dir: Path) -> list[Image.Image]:
        """Make the same call on the diffusers pipeline directly, without codex code."""
        raise NotImplementedError

    def request_for(self, task: str, tmp_path: Path) -> dict[str, Any]:
        """The case for ``task``, with ``{tmp}`` in string values (lists too) replaced by the test's folder."""
        return with_tmp(self.cases[task], tmp_path)

    def prepare_inputs(self, tmp_path: Path) -> None:
        """Write input images the cases refer to (override to add more)."""
        write_test_image(tmp_path / "init.png", (64, 64), seed=1)
        write_test_image(tmp_path / "small.png", (32, 32), seed=2)
        write_test_image(tmp_path / "mask.png", (64, 64), mode="L")

    # -- the suite ------------------------------------------------------------------------------

    def test_engine_is_registered(self):
        engine = get_engine(self.engine)
        assert set(self.cases) == set(engine.tasks), "every task of the engine needs a conformance case"

    def is_video(self, task: str) -> bool:
        return get_engine(self.engine).output_kind(task) == "video"

    def run_request(self, task: str, request: dict[str, Any], out: Path) -> dict[str, Any]:
        extra = ("--format", "frames,mp4") if self.is_video(task) else ()
        return run_json(self.engine, task, request, out, "tiny", *extra)

    def run_case(self, task: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        self.prepare_inputs(tmp_path)
        request = self.request_for(task, tmp_path)
        return request, self.run_request(task, request, tmp_path / "out")

    def outputs(self, task: str, result: dict[str, Any]) -> list[str]:
        if self.is_video(task):
            return sorted(f for f in result["files"] if Path(f).parent.name == "frames")
        return [f for f in result["files"] if f.endswith(".png")]

    def test_output_equals_direct_diffusers_call(self, task, tmp_path):
        from .checks import pipeline_calls

        with pipeline_calls() as calls:
            request, result = self.run_case(task, tmp_path)
        info = result["info"]
        expected = self.direct(task, info["request"], tiny_model_dir(self.engine))
        count = info["request"]["num_frames"] if self.is_video(task) else info["request"].get("batch_size", 1)
        assert len(self.outputs(task, result)) == count
        assert_same_pixels(self.outputs(task, result), expected, calls[-1] if calls else None)
        assert info["seed"] == request["seed"] and info["task"] == task and info["engine"] == self.engine
        if "images" in info["request"]:  # an edit: the output has the size info says, by the rule it names
            edit_size = info["notes"]["edit_size"]
            assert edit_size["rule"] and {Image.open(f).size for f in self.outputs(task, result)} == {
                (edit_size["width"], edit_size["height"])}, edit_size
        assert info["steps_done"] > 0 and set(info["timings"]) >= {"load", "denoise", "decode", "export", "total"}

    def other_sampler(self, task: str, sampler: str | None) -> str | None:
        """A sampler the engine accepts for ``task`` other than ``sampler`` (None: it has no choice)."""
        engine = get_engine(self.engine)
        if not engine.sampler_family:
            return None
        names = [s.name for s in samplers_for(engine, task)[0] if s.name != sampler]
        return names[0] if names else None

    def test_a_run_leaves_nothing_behind(self, task, tmp_path):
        """The same request before and after a run with another sampler and scheduler: both equal diffusers."""
        request, first = self.run_case(task, tmp_path)
        other = self.other_sampler(task, first["info"]["request"].get("sampler"))
        between = {**request, "sampler": other, "scheduler": "Automatic"} if other else request
        result = cli_run(["run", self.engine, task, "--model", "tiny", "--out", str(tmp_path / "between"), "-q",
                          "--json", json.dumps(between)])
        assert result.exit_code in (0, 2), result.stderr  # a sampler some task rejects is fine: it ran or was refused
        again = self.run_request(task, request, tmp_path / "again")
        expected = self.direct(task, first["info"]["request"], tiny_model_dir(self.engine))
        assert_same_pixels(self.outputs(task, first), expected)
        assert_same_pixels(self.outputs(task, again), expected)

    def test_outputs_record_the_run(self, task, tmp_path):
        from codex_core import read_info

        request, result = self.run_case(task, tmp_path)
        run_dir = Path(result["run_dir"])
        on_disk = json.loads((run_dir / "info.json").read_text())
        assert on_disk["request"] == result["info"]["request"]
        if self.is_video(task):
            from codex_core import probe_video as probe

            video = on_disk["video"]
            seen = probe(Path(video["path"]))
            assert seen["frames"] == video["frames"] == on_disk["request"]["num_frames"]
            assert seen["fps"] == video["fps"] == on_disk["request"]["fps"]
            assert (seen["width"], seen["height"]) == (video["width"], video["height"]) == (
                on_disk["request"]["width"], on_disk["request"]["height"])
            embedded = read_info(Path(video["path"]))
        else:
            assert sorted(p.name for p in run_dir.iterdir()) == sorted(Path(f).name for f in result["files"])
            embedded = read_info(run_dir / "0000.png")
            assert f"Seed: {request['seed']}" in embedded["parameters"]
        assert embedded["codex"]["request"] == on_disk["request"]
        # fill-only: everything the request gave is unchanged, the patch is exactly the rest
        for key, value in request.items():
            assert on_disk["request"][key] == value and key not in on_disk["applied_preset_patch"]

    def test_a_size_at_an_odd_multiple_of_the_stride_runs_at_that_size(self, task, tmp_path):
        from .checks import check_stride

        self.prepare_inputs(tmp_path)
        request = {k: v for k, v in self.request_for(task, tmp_path).items() if k not in self.stride_drops}
        check_stride(self.engine, task, request, tmp_path)

    def test_every_engine_field_reaches_the_pipeline(self, task, tmp_path):
        from .checks import check_fields_reach

        self.prepare_inputs(tmp_path)
        check_fields_reach(self.engine, task, self.request_for(task, tmp_path), tmp_path, self.field_changes,
                           self.fields_exempt)

    def test_every_preset_file_validates(self, tmp_path):
        from .checks import check_presets

        self.prepare_inputs(tmp_path)
        check_presets(self.engine, lambda task: self.request_for(task, tmp_path))

    def test_bad_request_exits_2_and_writes_nothing(self, bad_case, tmp_path):
        _, task, request, field = bad_case
        self.prepare_inputs(tmp_path)
        request = with_tmp(request, tmp_path)
        out = tmp_path / "out"
        result = cli_run(["run", self.engine, task, "--model", "tiny", "--out", str(out), "--json", json.dumps(request)])
        assert result.exit_code == 2, result.stderr
        assert field in result.stderr, result.stderr
        assert not out.exists() or not any(out.iterdir())


def refused_run(engine: str, task: str, request: dict[str, Any], tmp_path: Path, *,
                empty_out_ok: bool = False) -> str:
    """Run ``engine task`` on its tiny model through the CLI, expecting a refusal: exit 2 and nothing written
    (``tmp_path/out`` never made; ``empty_out_ok``: or made and left empty, for a refusal after loading).
    Returns stderr, for the test to find the message in."""
    out = tmp_path / "out"
    result = cli_run(["run", engine, task, "--model", "tiny", "--out", str(out), "--quiet",
                      "--json", json.dumps(request)])
    assert result.exit_code == 2, result.output
    assert not out.exists() or (empty_out_ok and not any(out.iterdir()))
    return result.stderr


def loaded_model(engine: str):
    """The engine's most recently used loaded model (a ``DiffusersModel``) in the process's model cache."""
    from codex_core.testing import loaded_models

    models = loaded_models(engine)
    assert models, f"no {engine} model is loaded"
    return models[-1]


def loaded_family(engine: str, task: str | None = None):
    """The ``PipelineFamily`` of the engine's most recently used model (of ``task``'s checkpoint)."""
    model = loaded_model(engine)
    folder = model.folders[task] if task else next(iter(model.families))
    return model.families[folder]


def assert_configs_differ_only(folder: Path, engine: str, transformer_changes: dict[str, Any]) -> None:
    """Every component config of ``folder`` equals the engine's tiny model's, but for ``transformer_changes``
    in the transformer's (e.g. the same tiny model built at another depth)."""
    for config in sorted(tiny_model_dir(engine).glob("*/config.json")):
        expected = json.loads(config.read_text())
        if config.parent.name == "transformer":
            expected.update(transformer_changes)
        assert json.loads((folder / config.parent.name / "config.json").read_text()) == expected, config.parent.name


class AttentionCalls:
    """Counts the attention query projections (``*.to_q``) the engine's loaded denoisers compute during a
    ``with`` block: what a step cache skips (a skipped block or a predicted attention never reaches its
    projection), whatever the machine's speed. Used by the step-cache tests and bench/speed.py."""

    def __init__(self, engine: str):
        self.engine, self.calls, self.handles = engine, 0, []

    def __enter__(self):
        model = loaded_model(self.engine)
        for family in model.families.values():
            for name in get_engine(self.engine).denoisers:
                module = getattr(family.base, name, None)
                for child_name, child in (module.named_modules() if module is not None else ()):
                    if child_name.endswith("to_q"):
                        self.handles.append(child.register_forward_pre_hook(self._count))
        return self

    def _count(self, module, args):
        self.calls += 1

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def make_unet_lora(engine: str, dest: Path) -> Path:
    """A tiny LoRA (diffusers format) on the attention projections of an engine's tiny UNet, with random
    non-zero weights, so that loading it changes the output. Needs peft."""
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    from ..pipelines import pipeline_class

    found = get_engine(engine)
    pipeline_cls = pipeline_class(found.pipelines[next(iter(found.pipelines))])
    unet = pipeline_cls.from_pretrained(tiny_model_dir(engine), **found.load_options).unet
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = get_peft_model_state_dict(unet)
    assert any("lora_B" in key and value.abs().sum() > 0 for key, value in state.items())
    name = f"tiny_{engine}_lora.safetensors"
    pipeline_cls.save_lora_weights(dest, unet_lora_layers=convert_state_dict_to_diffusers(state), weight_name=name)
    return dest / name



# keys that say who wrote a config, not what the model is
CONFIG_METADATA = frozenset({"_diffusers_version", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
                             "architectures", "_commit_hash", "output_hidden_states", "use_cache", "_class_name",
                             "return_dict", "id2label", "label2id", "problem_type", "tokenizer_class",
                             # an encoder-only class (T5EncoderModel, UMT5EncoderModel) sets its decoder flags itself
                             "is_encoder_decoder", "is_decoder", "scale_decoder_outputs"})


def _normalised_config(folder: Path, name: str, library: str, class_name: str) -> dict[str, Any] | None:
    """A component's config as its class reads it, defaults filled in, so configs written by other library
    versions compare (None: a tokenizer or processor, whose files describe no architecture)."""
    import inspect

    raw = None
    for file in ("config.json", "scheduler_config.json"):
        if (folder / name / file).is_file():
            raw = json.loads((folder / name / file).read_text())
    if raw is None:
        return None
    from ..sizes import component_class

    cls = component_class(library, class_name)
    if library == "transformers":
        return cls.config_class.from_dict(raw).to_dict()
    defaults = {key: parameter.default for key, parameter in inspect.signature(cls.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return {**defaults, **{key: value for key, value in raw.items() if key in defaults}}


def _architecture_differences(real: dict, tiny: dict, where: str) -> list[str]:
    """Values that choose an architecture (text, booleans, lists of block types) differ; numbers are sizes."""
    problems = []
    for key in sorted((set(real) & set(tiny)) - CONFIG_METADATA):
        a, b = real[key], tiny[key]
        if isinstance(a, dict) and isinstance(b, dict):  # e.g. text_config, vision_config
            problems += _architecture_differences(a, b, f"{where}{key}.")
        elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and (a or b) and all(
                isinstance(item, str) for item in [*a, *b]):
            if set(a) != set(b):  # block types: the tiny model may have fewer blocks, not other kinds
                problems.append(f"{where}{key}: the real model has {sorted(set(a))}, the tiny one {sorted(set(b))}")
        elif isinstance(a, (str, bool)) or isinstance(b, (str, bool)):
            if a != b and not (a in (None, False) and b in (None, False)):  # null reads as false
                problems.append(f"{where}{key}: the real model has {a!r}, the tiny one {b!r}")
    return problems


def _is_component(spec) -> bool:
    """A model_index.json entry naming a component: [library, class] (strings, or None for an absent one)."""
    return (isinstance(spec, list) and len(spec) == 2
            and all(part is None or isinstance(part, str) for part in spec))


def assert_tiny_matches_reference(engine: str, variant: str | None = None, folder: Path | None = None,
                                  ignore: dict[str, set[str]] | None = None) -> None:
    """The tiny model (``folder``, default the engine's own) is the real architecture at another size: the same
    pipeline and component classes as the shipped reference configs, and every component config, read by its
    class, with the same architecture choices (norms, activations, block types, flags); numbers (the sizes) may
    differ. ``ignore``: component -> keys a test leaves out, saying why."""
    from .. import reference_config_dir

    reference_dir, tiny_dir = reference_config_dir(engine, variant), folder or tiny_model_dir(engine)
    reference = json.loads((reference_dir / "model_index.json").read_text())
    tiny = json.loads((tiny_dir / "model_index.json").read_text())
    problems = []
    if reference["_class_name"] != tiny["_class_name"]:
        problems.append(f"pipeline: the real model is a {reference['_class_name']}, the tiny one a {tiny['_class_name']}")
    for name, spec in reference.items():
        if name.startswith("_") or not _is_component(spec):
            continue  # a pipeline's own config value (e.g. Krea2Pipeline's text_encoder_select_layers, a list)
        # transformers 5 has one tokenizer class per model: "T5TokenizerFast" is "T5Tokenizer"
        if [str(part).removesuffix("Fast") for part in tiny.get(name) or [None, None]] != [
                str(part).removesuffix("Fast") for part in spec]:
            problems.append(f"{name}: the real model has {spec}, the tiny one {tiny.get(name)}")
            continue
        if spec[0] is None:
            continue
        real_config = _normalised_config(reference_dir, name, *spec)
        tiny_config = _normalised_config(tiny_dir, name, *spec)
        if real_config is None or tiny_config is None:
            continue
        skip = (ignore or {}).get(name, set())
        problems += [problem for problem in _architecture_differences(real_config, tiny_config, f"{name}: ")
                     if problem.split(": ")[1].split(".")[0] not in skip]
    assert not problems, f"{engine}: the tiny model differs from the real architecture:\n  " + "\n  ".join(problems)


def write_transformer_lora(pipeline_class: str, folder: Path, dest: Path, targets: list[str], weight_name: str,
                           diffusers_keys: bool = False) -> Path:
    """A PEFT LoRA (rank 4, random non-zero weights, seed 0) on ``targets`` of the tiny model's transformer, saved
    by ``pipeline_class``'s own ``save_lora_weights`` as ``dest/weight_name``; ``diffusers_keys``: converted
    to diffusers' key names first (what some families' loaders read)."""
    import importlib

    import diffusers
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    library, class_name = json.loads((Path(folder) / "model_index.json").read_text())["transformer"]
    transformer = getattr(importlib.import_module(library), class_name).from_pretrained(Path(folder) / "transformer")
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=targets))
    state = get_peft_model_state_dict(transformer)
    if diffusers_keys:
        state = convert_state_dict_to_diffusers(state)
    getattr(diffusers, pipeline_class).save_lora_weights(dest, transformer_lora_layers=state, weight_name=weight_name)
    return Path(dest) / weight_name


def cp_plan_problems(model, cp_plan: dict) -> list[str]:
    """What in a context-parallel plan does not name a part of ``model``: a module (resolved as diffusers resolves
    it when it applies the plan) or a forward parameter of it. A plan a plugin supplies is checked with it: a
    plan naming a module the model lacks would otherwise split nothing, silently."""
    import inspect

    from diffusers.hooks.context_parallel import _get_submodule_by_name

    problems = []
    for module_id, entry in cp_plan.items():
        try:
            found = _get_submodule_by_name(model, module_id)
        except ValueError as exc:
            problems.append(f"{module_id!r}: {exc}")
            continue
        if not isinstance(entry, dict):
            continue
        for module in found if isinstance(found, list) else [found]:
            parameters = inspect.signature(type(module).forward).parameters
            problems += [f"{module_id!r} has no input {name!r}" for name in entry
                         if isinstance(name, str) and name not in parameters]
    return problems


def write_rank_result(result: dict) -> None:
    """In a script ``codex_core.testing.on_cpu_ranks`` runs: rank 0 writes ``result`` to the path it was given
    (argv[1]); then the process group ends (a gloo group left open can abort the process as it exits)."""
    import json
    import sys

    import torch.distributed as dist

    if dist.get_rank() == 0:
        Path(sys.argv[1]).write_text(json.dumps(result, indent=2), encoding="utf-8")
    dist.destroy_process_group()
