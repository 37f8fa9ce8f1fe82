"""The sampler policy: names map to the diffusers classes the reference table gives, strictly."""

import inspect

import diffusers
import pytest

from codex_core import registry
from codex_diffusers.samplers import DISCRETE, FLOW
from codex_core.errors import ParamError
from codex_core.samplers import resolve


def resolve_names(family, sampler, scheduler=None, params=None):
    samplers, schedules = registry.samplers()
    return resolve(family, sampler, scheduler, params or {}, "eng", "txt2img", samplers, schedules)


@pytest.mark.parametrize("sampler", DISCRETE + FLOW, ids=lambda s: f"{s.family}:{s.name}")
def test_table_matches_the_installed_diffusers(sampler):
    cls = getattr(diffusers, sampler.scheduler_class)
    accepted = set(inspect.signature(cls.__init__).parameters)
    assert "kwargs" not in accepted, f"{cls.__name__} is a placeholder: a backend it needs is missing"
    assert sampler.accepts <= accepted
    assert set(sampler.flags) <= accepted and set(sampler.param_flags) <= accepted
    schedule_args = {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing"}
    if sampler.family == "discrete":  # every schedule type the class can honour is offered
        assert (schedule_args & accepted) - sampler.accepts == set() or sampler.name == "DPM++ SDE"


@pytest.mark.parametrize("sampler, scheduler, cls, flags", [
    ("Euler", None, "EulerDiscreteScheduler", {}),
    ("Euler a", "Simple", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("DPM++ 2M", "Karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("DPM++ 2M Karras", None, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("dpm++ 2m sde", "Exponential", "DPMSolverMultistepScheduler",
     {"algorithm_type": "sde-dpmsolver++", "use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
    ("PLMS", "SGM Uniform", "PNDMScheduler", {"skip_prk_steps": True, "timestep_spacing": "trailing"}),
    ("UniPC", "Beta", "UniPCMultistepScheduler", {"use_beta_sigmas": True}),
])
def test_discrete_names_resolve(sampler, scheduler, cls, flags):
    choice = resolve_names("discrete", sampler, scheduler)
    assert choice.scheduler_class == cls
    assert flags.items() <= dict(choice.flags).items()
    getattr(diffusers, cls).from_config(diffusers.DDPMScheduler().config, **choice.flags)  # really accepted


def test_unknown_sampler_lists_the_allowed_names():
    with pytest.raises(ParamError) as caught:
        resolve_names("discrete", "Euler z")
    assert "sampler: unknown sampler 'Euler z'" in str(caught.value) and "DPM++ 2M SDE" in str(caught.value)


def test_schedule_a_class_cannot_honour_is_rejected_not_dropped():
    with pytest.raises(ParamError) as caught:
        resolve_names("discrete", "DDIM", "Karras")
    assert "DDIMScheduler has no use_karras_sigmas" in str(caught.value)
    assert "allowed with 'DDIM': Automatic, Uniform, Simple, DDIM" in str(caught.value)


def test_flow_engines_only_take_flow_samplers_with_the_shift_from_the_request():
    choice = resolve_names("flow", "UniPC", None, {"flow_shift": 5.0})
    assert dict(choice.flags) == {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 5.0}
    assert dict(resolve_names("flow", "Euler", None, {"flow_shift": 3.0}).flags) == {"shift": 3.0}
    for name in ("Euler a", "DDIM", "PLMS"):
        with pytest.raises(ParamError, match="allowed: Euler, UniPC, DPM\\+\\+ 2M"):
            resolve_names("flow", name)
    with pytest.raises(ParamError, match="scheduler"):
        resolve_names("flow", "Euler", "Karras")


def test_an_engine_can_narrow_its_family(monkeypatch):
    import copy

    spec = copy.copy(registry.get_engine("sd15"))
    spec.samplers, spec.schedule_types = ("Euler",), ("Automatic", "Karras")
    samplers, schedules = registry.samplers_for(spec)
    assert [s.name for s in samplers] == ["Euler"] and [s.name for s in schedules] == ["Automatic", "Karras"]
    with pytest.raises(ParamError, match="allowed: Euler\n"):
        resolve("discrete", "DDIM", None, {}, "eng", "t", samplers, schedules)
    with pytest.raises(ParamError, match="allowed with 'Euler': Automatic, Karras"):
        resolve("discrete", "Euler", "Simple", {}, "eng", "t", samplers, schedules)


@pytest.mark.parametrize("sampler", ["UniPC", "DPM++ 2M"])
def test_a_flow_sampler_without_a_flow_shift_field_takes_the_checkpoints_shift(sampler):
    """A flow engine with no flow_shift field: UniPC and DPM++ run at the checkpoint config's shift, not at their
    own default 1.0 (what a third-party SD 3 engine hit: silently shift 1.0 while the checkpoint said 3.0)."""
    from codex_diffusers.pipelines import build_scheduler

    checkpoint = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    config = dict(checkpoint.config)
    samplers, schedules = registry.samplers()
    bare = resolve("flow", sampler, None, {}, "e", "txt2img", samplers, schedules)
    assert bare.config_flags == {"flow_shift": "shift"}
    assert build_scheduler(checkpoint, bare, config).config.flow_shift == 3.0
    given = resolve("flow", sampler, None, {"flow_shift": 5.0}, "e", "txt2img", samplers, schedules)
    assert given.config_flags == {} and build_scheduler(checkpoint, given, config).config.flow_shift == 5.0
