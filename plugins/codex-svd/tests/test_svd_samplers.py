"""Why svd allows only Euler (Automatic / Karras): a run of every discrete sampler on SVD's parametrisation.

The SVD UNet is an EDM model with v-prediction: it sees ``c_in * x`` (c_in = 1/sqrt(sigma^2+1)) and the
noise level as ``c_noise = 0.25 ln sigma``, and its output F gives the denoised sample
``D = x/(sigma^2+1) - sigma/sqrt(sigma^2+1) * F``. A random-weight UNet cannot tell a right sampler
from a wrong one, so these tests stand an exact denoiser in for it: for data drawn from N(MU, S^2),
``D(x, sigma) = MU + S^2/(S^2+sigma^2) (x - MU)``, and the probability-flow ODE from sigma_max takes
noise x_T to exactly ``MU + S/sqrt(S^2+sigma_max^2) (x_T - MU)``. Each scheduler is built from the
real checkpoint's scheduler config plus the sampler's flags and driven like the pipeline drives it
(init_noise_sigma, scale_model_input, step). One that feeds the model anything but 0.25 ln sigma,
or runs a different noise schedule, lands far from that end point, yields NaN or raises.
"""

from __future__ import annotations

import diffusers
import pytest
import torch

from codex_core import installed_samplers
from codex_svd.engines import SAMPLERS, SCHEDULE_TYPES
from codex_svd.tiny import SVD_SCHEDULER

# every discrete sampler and schedule type registered (the kit's A1111 names), not just those svd allows
DISCRETE = [s for s in installed_samplers()[0] if s.family == "discrete"]
DISCRETE_SCHEDULES = [s for s in installed_samplers()[1] if s.family == "discrete"]

MU, S = 0.3, 0.5
SIGMA_MAX = SVD_SCHEDULER["sigma_max"]  # where SVD's sampling starts (700)
# Euler is first order: its error halves with each doubling of the steps (0.16 at 25 steps, 0.04 at
# 100); a sampler that feeds the model the wrong noise level does not converge at all.
STEPS = 100
TOLERANCE = 0.1


def exact_v(model_input: torch.Tensor, timestep) -> torch.Tensor:
    """What a perfect SVD UNet outputs, reading the noise level from the timestep as SVD was trained."""
    sigma = torch.exp(4 * torch.as_tensor(timestep, dtype=torch.float64))  # c_noise = 0.25 ln sigma
    x = model_input.double() * (sigma**2 + 1).sqrt()  # undo c_in
    denoised = MU + S**2 / (S**2 + sigma**2) * (x - MU)
    return ((denoised - x / (sigma**2 + 1)) / (-sigma / (sigma**2 + 1).sqrt())).float()


def solve(scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's denoising loop with the exact model; returns (result, exact ODE end point)."""
    torch.manual_seed(0)
    scheduler.set_timesteps(STEPS, device="cpu")
    x_start = torch.randn(1000) * scheduler.init_noise_sigma
    x = x_start
    for t in scheduler.timesteps:
        x = scheduler.step(exact_v(scheduler.scale_model_input(x, t), t), t, x).prev_sample
        if not torch.isfinite(x).all():
            break  # diverged: no need to run the remaining steps
    return x, MU + S / (S**2 + SIGMA_MAX**2) ** 0.5 * (x_start - MU)


def error(sampler, schedule) -> float:
    """Distance from the exact end point, relative to the end points' spread; inf when it fails to run."""
    cls = getattr(diffusers, sampler.scheduler_class)
    try:
        x, exact = solve(cls.from_config(SVD_SCHEDULER, **sampler.flags, **schedule.flags))
    except (ValueError, IndexError, RuntimeError, AssertionError):
        return float("inf")
    if not torch.isfinite(x).all():
        return float("inf")
    return float((x - exact).abs().max() / (exact - MU).abs().max())


def schedules_for(sampler):
    return [s for s in DISCRETE_SCHEDULES if set(s.flags) <= sampler.accepts]


@pytest.mark.parametrize("sampler", DISCRETE, ids=lambda s: s.name)
def test_a_sampler_is_allowed_exactly_when_it_solves_svds_parametrisation(sampler):
    errors = {schedule.name: error(sampler, schedule) for schedule in schedules_for(sampler)}
    works = any(e < TOLERANCE for e in errors.values())
    assert works == (sampler.name in SAMPLERS), errors


def test_the_allowed_schedule_types_are_those_that_run_and_change_something():
    euler = next(s for s in DISCRETE if s.name == "Euler")
    by_name = {s.name: s for s in DISCRETE_SCHEDULES}
    for name in SCHEDULE_TYPES:
        assert error(euler, by_name[name]) < TOLERANCE
    # The checkpoint config sets use_karras_sigmas: diffusers refuses a second sigma schedule on top ...
    for name in ("Exponential", "Beta"):
        with pytest.raises(ValueError, match="Only one of"):
            diffusers.EulerDiscreteScheduler.from_config(SVD_SCHEDULER, **by_name[name].flags)
    # ... and Karras sigmas between the config's sigma_max and sigma_min override timestep_spacing, so the
    # schedule types that only space timesteps ("Simple", "Uniform", "DDIM") would silently be Karras again.
    spacing_only = {s.name for s in DISCRETE_SCHEDULES if set(s.flags) == {"timestep_spacing"}}
    assert spacing_only == {"Simple", "Uniform", "DDIM"}
    karras = diffusers.EulerDiscreteScheduler.from_config(SVD_SCHEDULER, **by_name["Karras"].flags)
    karras.set_timesteps(25)
    for name in spacing_only:
        spaced = diffusers.EulerDiscreteScheduler.from_config(SVD_SCHEDULER, **by_name[name].flags)
        spaced.set_timesteps(25)
        assert torch.equal(karras.sigmas, spaced.sigmas), name
    assert set(SCHEDULE_TYPES) == {s.name for s in DISCRETE_SCHEDULES} - {"Exponential", "Beta"} - spacing_only
