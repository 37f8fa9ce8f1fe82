"""Every A1111 1.10 and Forge sampler and schedule-type name, and what each sampler family runs for it.

The names, aliases and labels are A1111's (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py,
sd_samplers_lcm.py, sd_schedulers.py) and Forge's additions (its alter samplers, Turbo and the Align Your
Steps variants), in A1111's order: clients list them as given and take the first as the default.

For each family a name ``runs`` the family's own names (codex_diffusers.samplers), most faithful first:
an engine runs the first it takes. ``exact`` marks the same algorithm on the same schedule; anything
else is the nearest, which runs only for a request with ``sampler_fallback: "nearest"`` (the A1111
API's requests) and is reported with the reason given here. tests/test_sampler_names.py checks the
claims that can be run: the DPM++ solvers against the k-diffusion updates, the nearest schedules by
their distance in log sigma, every name resolving on every engine.

``automatic``: the schedule type A1111's "Automatic" means for the sampler (its ``scheduler`` option,
else k-diffusion's even spacing from the last training step); ``fixed_schedule``: A1111 runs the
sampler on its own timesteps whatever schedule type is asked (its DDIM, PLMS and UniPC).
"""

from __future__ import annotations

from codex_core import SamplerName

SECOND_ORDER = ("DPM++ 2M", "UniPC", "Euler")  # flow: the nearest higher-order solver an engine runs
MULTISTEP = ("UniPC", "DPM++ 2M", "Euler")

# reasons shared by several names
_FLOW_SECOND = "diffusers has no such solver for flow-matching models; DPM++ 2M (flow sigmas) is the nearest"
_FLOW_FIRST = "diffusers has no such sampler for flow-matching models; the flow Euler step is the nearest"
_FLOW_MULTI = "diffusers has no such multistep solver for flow-matching models; UniPC (flow sigmas) is the nearest"
_FLOW_ONLY = "a Forge sampler for Flux models, which diffusers does not have; Euler is the nearest here"
_AYS = "diffusers has no {} schedule; the DDIM spacing is the nearest in log sigma on Stable Diffusion's noise schedule"

# name, aliases, A1111's "Automatic" for it, fixed schedule,
# discrete: (runs, exact, reason), flow: (runs, exact, reason)
SAMPLERS = [
    ("DPM++ 2M", ("k_dpmpp_2m",), "Karras", False, (("DPM++ 2M",), True, ""), (SECOND_ORDER, True, "")),
    ("DPM++ SDE", ("k_dpmpp_sde",), "Karras", False,
     (("DPM++ SDE",), False, "k-diffusion's DPM++ SDE is stochastic and its diffusers port (DPMSolverSDEScheduler) "
      "needs torchsde; this is the deterministic single-step DPM-Solver++ (DPMSolverSinglestepScheduler)"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "Exponential", False, (("DPM++ 2M SDE",), True, ""),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "Exponential", False, (("DPM++ 2M SDE Heun",), True, ""),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM++ 2S a", ("k_dpmpp_2s_a",), "Karras", False,
     (("DPM++ SDE", "Euler a"), False, "diffusers has no ancestral DPM++ 2S; DPM++ SDE is the same second-order "
      "single-step DPM-Solver++ without the ancestral noise (DPMSolverSinglestepScheduler)"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "Exponential", False,
     (("DPM++ 2M SDE Heun", "DPM++ 2M SDE"), False, "diffusers' third-order SDE DPM-Solver++ does not reproduce "
      "k-diffusion's DPM++ 3M SDE; the second-order DPM++ 2M SDE Heun is nearer to it"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("Euler a", ("k_euler_a", "k_euler_ancestral"), "Uniform", False, (("Euler a",), True, ""),
     (("Euler",), False, "diffusers has no ancestral Euler for flow-matching models; Euler is the same steps "
      "without re-noising")),
    ("Euler", ("k_euler",), "Uniform", False, (("Euler",), True, ""), (("Euler",), True, "")),
    ("LMS", ("k_lms",), "Uniform", False, (("LMS",), True, ""), (MULTISTEP, False, _FLOW_MULTI)),
    ("Heun", ("k_heun",), "Uniform", False, (("Heun",), True, ""), (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM2", ("k_dpm_2",), "Karras", False,
     (("DPM2",), False, "A1111 drops the next-to-last sigma of DPM2's schedule; KDPM2DiscreteScheduler keeps it"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM2 a", ("k_dpm_2_a",), "Karras", False,
     (("DPM2 a",), False, "A1111 drops the next-to-last sigma of DPM2 a's schedule; "
      "KDPM2AncestralDiscreteScheduler keeps it"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM fast", ("k_dpm_fast",), "Uniform", False,
     (("DPM++ SDE", "DPM++ 2M"), False, "k-diffusion's DPM-Solver (fixed orders 3, 2, 1) is not in diffusers; the "
      "single-step DPM-Solver++ (DPMSolverSinglestepScheduler) is the nearest"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DPM adaptive", ("k_dpm_ad",), "Uniform", False,
     (("DPM++ SDE", "DPM++ 2M"), False, "an adaptive step size that ignores steps is not in diffusers; the "
      "single-step DPM-Solver++ (DPMSolverSinglestepScheduler) is the nearest, at the steps asked"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("Restart", ("restart",), "Karras", False,
     (("Heun",), False, "Restart sampling (Heun steps that re-inject noise over Karras intervals) is not in "
      "diffusers; Heun is the same steps without the restarts"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DDIM", ("ddim",), "DDIM", True, (("DDIM",), True, ""),
     (("Euler",), False, "DDIM (eta 0) on a flow-matching model is the first-order Euler step")),
    ("DDIM CFG++", ("ddim_cfgpp",), "DDIM", True,
     (("DDIM",), False, "CFG++ guidance is not in diffusers; DDIM is the same sampler with ordinary classifier-free "
      "guidance, for which CFG++'s usual scale (about 1) is weak"),
     (("Euler",), False, _FLOW_FIRST)),
    ("PLMS", ("plms",), "DDIM", True, (("PLMS",), True, ""), (MULTISTEP, False, _FLOW_MULTI)),
    ("UniPC", ("unipc",), "Uniform", True,
     (("UniPC",), False, "A1111's UniPC is the bh1 variant of order 3; UniPCMultistepScheduler is its bh2 variant "
      "of order 2"),
     (MULTISTEP, False, "Forge's UniPC is the bh1 variant of order 3; UniPCMultistepScheduler (flow sigmas) is "
      "its bh2 variant of order 2")),
    ("LCM", ("k_lcm",), None, False,
     (("LCM",), False, "LCMScheduler picks its timesteps from LCM's 50 original steps by its own rule, A1111 by "
      "sigma"),
     (("Euler",), False, _FLOW_FIRST)),
    # Forge's additions
    ("HeunPP2", ("heunpp2",), "Uniform", False,
     (("Heun",), False, "HeunPP2 (Heun with a third-order correction) is not in diffusers; Heun is the nearest"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("IPNDM", ("ipndm",), "Uniform", False,
     (("LMS", "PLMS"), False, "iPNDM is a fourth-order Adams-Bashforth multistep in sigma, as LMS is; diffusers' "
      "IPNDMScheduler has no noise schedule for these models"),
     (MULTISTEP, False, _FLOW_MULTI)),
    ("IPNDM_V", ("ipndm_v",), "Uniform", False,
     (("LMS", "PLMS"), False, "iPNDM-v is a variable-step fourth-order multistep in sigma, as LMS is"),
     (MULTISTEP, False, _FLOW_MULTI)),
    ("DEIS", ("deis",), "Uniform", False,
     (("DEIS",), False, "Forge's DEIS takes its third-order coefficients from k-diffusion's time-based table; "
      "DEISMultistepScheduler (order 3) computes them in log-rho"),
     (SECOND_ORDER, False, _FLOW_SECOND)),
    ("DDPM", ("ddpm",), "Uniform", False, (("DDPM",), True, ""), (("Euler",), False, _FLOW_FIRST)),
    ("[Forge] Flux Realistic", (), None, False, (("Euler",), False, _FLOW_ONLY),
     (SECOND_ORDER, False, "a Forge sampler for Flux, which diffusers does not have; DPM++ 2M (flow sigmas) is the "
      "nearest")),
    ("[Forge] Flux Realistic (Slow)", (), None, False, (("Euler",), False, _FLOW_ONLY),
     (SECOND_ORDER, False, "a Forge sampler for Flux, which diffusers does not have; DPM++ 2M (flow sigmas) is the "
      "nearest")),
]

_FLOW_SCHEDULE = ("flow-matching samplers here run the checkpoint's own shifted sigma schedule, evenly spaced in "
                  "t; there is no other schedule type for them")

# name, label, aliases, discrete: (runs, exact, reason); every flow schedule runs the checkpoint's own
SCHEDULES = [
    ("automatic", "Automatic", (), (("Automatic",), True, "")),
    ("uniform", "Uniform", (), (("Uniform",), True, "")),
    ("karras", "Karras", (), (("Karras",), True, "")),
    ("exponential", "Exponential", (), (("Exponential",), True, "")),
    ("polyexponential", "Polyexponential", (),
     (("Exponential",), True, "at A1111's default rho of 1 the polyexponential schedule is the exponential one")),
    ("sgm_uniform", "SGM Uniform", ("SGMUniform",),
     (("Simple",), True, "evenly spaced from the last training step: diffusers' trailing spacing")),
    ("kl_optimal", "KL Optimal", (), (("DDIM", "Uniform"), False, _AYS.format("KL-optimal"))),
    ("align_your_steps", "Align Your Steps", (), (("DDIM", "Uniform"), False, _AYS.format("Align Your Steps"))),
    ("simple", "Simple", (), (("Simple",), True, "")),
    ("normal", "Normal", (),
     (("Uniform",), True, "A1111's Normal spaces timesteps evenly from the last training step to the first, as "
      "its Uniform does")),
    ("ddim", "DDIM", (), (("DDIM",), True, "")),
    ("beta", "Beta", (), (("Beta",), True, "")),
    ("turbo", "Turbo", (), (("Simple",), True, "evenly spaced from the last training step: trailing spacing")),
    ("align_your_steps_GITS", "Align Your Steps GITS", (),
     (("DDIM", "Uniform"), False, _AYS.format("Align Your Steps GITS"))),
    ("align_your_steps_11", "Align Your Steps 11", (), (("DDIM", "Uniform"), False, _AYS.format("Align Your Steps"))),
    ("align_your_steps_32", "Align Your Steps 32", (), (("DDIM", "Uniform"), False, _AYS.format("Align Your Steps"))),
]


def _names() -> list[SamplerName]:
    found = []
    for name, aliases, automatic, fixed, discrete, flow in SAMPLERS:
        for family, (runs, exact, reason), auto in (("discrete", discrete, automatic), ("flow", flow, None)):
            found.append(SamplerName(name, family, runs, exact=exact, reason=reason, aliases=aliases,
                                     automatic=auto, fixed_schedule=fixed and family == "discrete"))
    for name, label, aliases, (runs, exact, reason) in SCHEDULES:
        found.append(SamplerName(name, "discrete", runs, "schedule", exact, reason, aliases, label=label))
        automatic = name == "automatic"
        found.append(SamplerName(name, "flow", ("Automatic",), "schedule", automatic,
                                 "" if automatic else _FLOW_SCHEDULE, aliases, label=label))
    return found


A1111_NAMES = _names()
