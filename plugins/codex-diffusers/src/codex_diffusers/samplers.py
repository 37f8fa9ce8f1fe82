"""The kit's sampler tables: A1111/Forge sampler and schedule-type names mapped to diffusers schedulers, for
discrete (noise-predicting) checkpoints and for flow-matching ones. The discrete table follows the A1111
column of the diffusers scheduler overview (docs/source/en/api/schedulers/overview.md: "DPM++ 2M Karras" =
DPMSolverMultistepScheduler with use_karras_sigmas=True, ...). Registered by the kit's plugin through
``codex_register_samplers``; the core resolves names against them (``codex_core.samplers``). What every
other A1111/Forge name runs (exactly or as the nearest) is in ``a1111_names``.
"""

from codex_core import SamplerDef, ScheduleType

from .a1111_names import A1111_NAMES

# Scheduler __init__ arguments a schedule type may set, per class. tests/test_samplers.py checks
# these against the installed diffusers so the table cannot drift silently.
ALL_SIGMAS = frozenset({"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing"})
SPACING_ONLY = frozenset({"timestep_spacing"})

DISCRETE = [
    SamplerDef("Euler", "discrete", "EulerDiscreteScheduler", accepts=ALL_SIGMAS),
    SamplerDef("Euler a", "discrete", "EulerAncestralDiscreteScheduler", accepts=SPACING_ONLY),
    SamplerDef("Heun", "discrete", "HeunDiscreteScheduler", accepts=ALL_SIGMAS),
    SamplerDef("LMS", "discrete", "LMSDiscreteScheduler", accepts=ALL_SIGMAS, requires=("scipy",)),
    SamplerDef("DDIM", "discrete", "DDIMScheduler", accepts=SPACING_ONLY),
    SamplerDef("PLMS", "discrete", "PNDMScheduler", {"skip_prk_steps": True}, accepts=SPACING_ONLY),
    SamplerDef("DPM++ 2M", "discrete", "DPMSolverMultistepScheduler",
               {"algorithm_type": "dpmsolver++", "solver_order": 2}, accepts=ALL_SIGMAS),
    SamplerDef("DPM++ 2M SDE", "discrete", "DPMSolverMultistepScheduler",
               {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, accepts=ALL_SIGMAS),
    # k-diffusion's sample_dpmpp_2m_sde(solver_type="heun"), which A1111 and Forge run as "DPM++ 2M SDE Heun";
    # tests/test_sampler_names.py checks it against the k-diffusion update on the same noise.
    SamplerDef("DPM++ 2M SDE Heun", "discrete", "DPMSolverMultistepScheduler",
               {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"}, accepts=ALL_SIGMAS),
    # The diffusers docs' table maps "DPM++ SDE" to the single-step solver (no torchsde needed);
    # some tools use DPMSolverSDEScheduler instead. We follow the docs. The single-step solver always
    # spaces its timesteps evenly from the last training step (it has no timestep_spacing argument).
    SamplerDef("DPM++ SDE", "discrete", "DPMSolverSinglestepScheduler",
               accepts=frozenset({"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"}),
               implied={"timestep_spacing": "linspace"}),
    SamplerDef("DPM2", "discrete", "KDPM2DiscreteScheduler", accepts=ALL_SIGMAS),
    SamplerDef("DPM2 a", "discrete", "KDPM2AncestralDiscreteScheduler", accepts=ALL_SIGMAS),
    SamplerDef("UniPC", "discrete", "UniPCMultistepScheduler", accepts=ALL_SIGMAS),
    SamplerDef("LCM", "discrete", "LCMScheduler", accepts=SPACING_ONLY),
    SamplerDef("DDPM", "discrete", "DDPMScheduler", accepts=SPACING_ONLY),
    SamplerDef("DEIS", "discrete", "DEISMultistepScheduler", {"solver_order": 3}, accepts=ALL_SIGMAS),
]

# Karras, Exponential and Beta take sigma_max and sigma_min from the timesteps the spacing picks: "linspace"
# starts at the last training step, as A1111 and k-diffusion do (the checkpoints' "leading" would start
# Euler at sigma 11.0 instead of 14.6 at 20 steps).
DISCRETE_SCHEDULES = [
    ScheduleType("Automatic", "discrete"),
    ScheduleType("Karras", "discrete", {"use_karras_sigmas": True, "timestep_spacing": "linspace"}),
    ScheduleType("Exponential", "discrete", {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}),
    ScheduleType("Beta", "discrete", {"use_beta_sigmas": True, "timestep_spacing": "linspace"}),
    # A1111's "uniform" and "normal": timesteps evenly from the last training step to the first
    ScheduleType("Uniform", "discrete", {"timestep_spacing": "linspace"}),
    ScheduleType("Simple", "discrete", {"timestep_spacing": "trailing"}, aliases=("SGM Uniform",)),
    # A1111's "ddim" schedule (and its DDIM/PLMS timesteps): every (1000 // steps)-th step from the first
    ScheduleType("DDIM", "discrete", {"timestep_spacing": "leading"}),
]

# Flow-matching checkpoints predict flow (velocity), not noise: only the flow variants apply.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
# The shift of the flow sigmas: a request's flow_shift field where the engine has one (Euler's shift,
# UniPC's and DPM++'s flow_shift), else the checkpoint's own scheduler config (its FlowMatchEuler shift:
# UniPC and DPM++ would otherwise run at their default 1.0 whatever the checkpoint says). With dynamic
# shifting (FLUX.1, LTX-Video) the pipeline's mu decides and the static shift is unused.
FLOW_SHIFT = {"param_flags": {"flow_shift": "flow_shift"}, "config_flags": {"flow_shift": "shift"}}
FLOW = [
    SamplerDef("Euler", "flow", "FlowMatchEulerDiscreteScheduler", param_flags={"shift": "flow_shift"}),
    SamplerDef("UniPC", "flow", "UniPCMultistepScheduler", FLOW_SIGMAS, **FLOW_SHIFT),
    SamplerDef("DPM++ 2M", "flow", "DPMSolverMultistepScheduler",
               {**FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}, **FLOW_SHIFT),
]
FLOW_SCHEDULES = [ScheduleType("Automatic", "flow")]

TABLES = (*DISCRETE, *DISCRETE_SCHEDULES, *FLOW, *FLOW_SCHEDULES, *A1111_NAMES)
