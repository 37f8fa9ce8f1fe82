"""A1111's and Forge's sampler and schedule-type names: every one resolves on every engine; where the tables say
a name runs exactly, running the math shows it does (the DPM++ solvers against k-diffusion's updates on the same
noise, each schedule type against A1111's formula); where they say the nearest, it is the nearest; a strict
request takes only the exact ones, and ``sampler_fallback: "nearest"`` runs, records and replays the others."""

from __future__ import annotations

import json
import math
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from scipy import stats

from codex_core import registry
from codex_core.errors import ParamError
from codex_core.samplers import resolve
from codex_core.serve.a1111 import names as a1111_samplers
from codex_core.testing import cli_run, run_json
from codex_diffusers.pipelines import build_scheduler

# A1111 1.10's lists and Forge's additions, as their sources have them (modules/sd_samplers_kdiffusion.py,
# sd_samplers_timesteps.py, sd_samplers_lcm.py, sd_schedulers.py; Forge's alter samplers)
A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                  "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM",
                  "DDIM CFG++", "PLMS", "UniPC", "LCM"]
FORGE_SAMPLERS = ["HeunPP2", "IPNDM", "IPNDM_V", "DEIS", "DDPM", "[Forge] Flux Realistic",
                  "[Forge] Flux Realistic (Slow)"]
A1111_SCHEDULES = ["automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal",
                   "align_your_steps", "simple", "normal", "ddim", "beta"]
FORGE_SCHEDULES = ["turbo", "align_your_steps_GITS", "align_your_steps_11", "align_your_steps_32"]

# Stable Diffusion's noise schedule (the sd15/sdxl checkpoints' scheduler config)
SD_CONFIG = dict(diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                  steps_offset=1, timestep_spacing="leading").config)
ALPHAS = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
MODEL_SIGMAS = ((1 - ALPHAS) / ALPHAS) ** 0.5  # sigma of each training timestep 0..999


def a1111_names(family: str, kind: str) -> list:
    return [n for n in registry.sampler_names() if n.vocabulary == "a1111" and n.family == family and n.kind == kind]


def choose(engine_key: str, sampler: str, scheduler: str | None = None, fallback: str = "nearest",
           task: str = "txt2img"):
    engine = registry.get_engine(engine_key)
    return resolve(engine.sampler_family, sampler, scheduler, {}, engine_key, task,
                   *registry.samplers_for(engine, task), registry.sampler_names_for(engine), fallback)


def scheduler_of(choice):
    return build_scheduler(diffusers.EulerDiscreteScheduler.from_config(SD_CONFIG), choice, SD_CONFIG)


# -- the tables ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["discrete", "flow"])
def test_the_tables_hold_every_a1111_and_forge_name_in_a1111s_order(family):
    assert [n.name for n in a1111_names(family, "sampler")] == A1111_SAMPLERS + FORGE_SAMPLERS
    assert [n.name for n in a1111_names(family, "schedule")] == A1111_SCHEDULES + FORGE_SCHEDULES
    samplers, schedules = registry.samplers()
    own = {s.name for s in samplers if s.family == family}
    own_schedules = {s.name for s in schedules if s.family == family}
    for name in a1111_names(family, "sampler"):
        assert set(name.runs) <= own, name
        assert name.automatic is None or name.automatic in own_schedules, name
        assert name.exact or name.reason, f"{name.name}: a nearest mapping says why"
    for name in a1111_names(family, "schedule"):
        assert set(name.runs) <= own_schedules, name


@pytest.mark.parametrize("engine_key", ["sd15", "sdxl", "svd", "flux", "qwen_image", "wan_ti2v_5b",
                                        "hunyuan_video", "ltx_video"])
def test_every_name_and_alias_runs_on_every_engine_and_strict_takes_only_the_exact(engine_key):
    engine = registry.get_engine(engine_key)
    for task in engine.tasks:
        allowed = {s.name for s in registry.samplers_for(engine, task)[0]}
        for name in a1111_names(engine.sampler_family, "sampler"):
            for spelling in name.spellings:
                choice = choose(engine_key, spelling, task=task)
                assert choice.sampler in allowed and choice.fallback == "nearest"
                exact = "sampler" not in choice.approximate
                assert (choice.warning is None) == exact, choice.warning
                # a Codex name runs as it is even where it only approximates A1111's (DPM++ SDE, UniPC)
                if exact or spelling.casefold() in {a.casefold() for a in allowed}:
                    assert choose(engine_key, spelling, fallback="strict", task=task).sampler == choice.sampler
                    continue
                with pytest.raises(ParamError, match="allowed: ") as refused:
                    choose(engine_key, spelling, fallback="strict", task=task)
                assert f'"sampler_fallback": "nearest" runs {choice.sampler!r}' in str(refused.value)
        for name in a1111_names(engine.sampler_family, "schedule"):
            choice = choose(engine_key, next(iter(allowed)), name.name, task=task)
            assert choice.schedule in {s.name for s in registry.samplers_for(engine, task)[1]}


def test_an_unknown_name_is_refused_even_for_the_nearest():
    for fallback in ("strict", "nearest"):
        with pytest.raises(ParamError, match="unknown sampler 'Euler z'.*allowed: Euler, Euler a"):
            choose("sd15", "Euler z", fallback=fallback)
        with pytest.raises(ParamError, match="unknown schedule type 'Karras2'"):
            choose("sd15", "Euler", "Karras2", fallback=fallback)


@pytest.mark.parametrize("engine_key, sampler, scheduler, runs, schedule", [
    ("sd15", "k_euler_a", "sgm_uniform", "Euler a", "Simple"),  # exact translations: strict takes them
    ("sd15", "DPM++ 2M SDE Heun Karras", None, "DPM++ 2M SDE Heun", "Karras"),
    ("sd15", "DPM++ 2S a", "karras", "DPM++ SDE", "Karras"),
    ("sd15", "DPM++ 3M SDE", "exponential", "DPM++ 2M SDE Heun", "Exponential"),
    ("sd15", "Euler a", "Karras", "Euler a", "Automatic"),  # EulerAncestralDiscreteScheduler has no Karras sigmas
    ("sd15", "DPM++ 2M", "kl_optimal", "DPM++ 2M", "DDIM"),
    ("flux", "Euler a", "karras", "Euler", "Automatic"),
    ("flux", "DDIM", "normal", "Euler", "Automatic"),
    ("flux", "DPM++ 2M", None, "UniPC", "Automatic"),  # flux does not run DPM++ 2M; UniPC is the next nearest
    ("wan_ti2v_5b", "DPM++ 2M SDE", None, "DPM++ 2M", "Automatic"),
])
def test_the_nearest_of_a_name(engine_key, sampler, scheduler, runs, schedule):
    choice = choose(engine_key, sampler, scheduler)
    assert (choice.sampler, choice.schedule) == (runs, schedule)
    info = choice.info()
    assert info["sampler_in"] == sampler and info["scheduler_in"] == scheduler and info["sampler_fallback"] == "nearest"
    assert info["sampler_effective"] == runs and info["scheduler_effective"]["schedule"] == schedule


def test_flux_img2img_runs_euler_only_strictly_named():
    with pytest.raises(ParamError, match="sampler: 'UniPC' does not run with flux img2img; allowed: Euler"):
        choose("flux", "UniPC", fallback="strict", task="img2img")
    assert choose("flux", "UniPC", task="img2img").sampler == "Euler"
    assert choose("flux", "UniPC", fallback="strict").sampler == "UniPC"  # txt2img runs it


# -- exact means the same scheduler ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sampler", "schedule"])
def test_an_exact_name_configures_the_scheduler_its_own_name_does(kind):
    for name in (n for n in a1111_names("discrete", kind) if n.exact):
        own = (name.runs[0], None) if kind == "sampler" else ("Euler", name.runs[0])
        expected = scheduler_of(choose("sd15", *own, fallback="strict"))
        for spelling in name.spellings:
            asked = (spelling, None) if kind == "sampler" else ("Euler", spelling)
            got = scheduler_of(choose("sd15", *asked, fallback="strict"))
            assert type(got) is type(expected) and dict(got.config) == dict(expected.config), spelling


def _interp(t):
    """Sigma at fractional training timesteps, interpolated in log sigma (k-diffusion's, hence A1111's)."""
    return np.exp(np.interp(t, np.arange(1000), np.log(MODEL_SIGMAS)))


def a1111_sigmas(name: str, n: int) -> np.ndarray:
    """A1111's schedule types (modules/sd_schedulers.py), written from their definitions: n sigmas, no final 0."""
    low, high = MODEL_SIGMAS[0], MODEL_SIGMAS[-1]
    ramp = np.linspace(0, 1, n)
    if name in ("uniform", "normal"):  # timesteps evenly from the last training step to the first
        return _interp(np.linspace(999, 0, n))
    if name == "sgm_uniform":  # n of n + 1 even steps from the last training step
        return _interp(np.linspace(999, 0, n + 1)[:-1])
    if name == "karras":
        return (high ** (1 / 7) + ramp * (low ** (1 / 7) - high ** (1 / 7))) ** 7
    if name in ("exponential", "polyexponential"):  # polyexponential at its default rho of 1
        return np.exp(np.log(high) + ramp * (np.log(low) - np.log(high)))
    if name == "simple":
        return MODEL_SIGMAS[[999 - int(x * 1000 / n) for x in range(n)]]
    if name == "turbo":
        return MODEL_SIGMAS[np.round(np.arange(n, 0, -1) * 1000 / n - 1).astype(int)]
    if name == "ddim":
        return MODEL_SIGMAS[np.arange(1, 1000, 1000 // n)[::-1]]
    if name == "beta":
        return low + stats.beta.ppf(1 - ramp, 0.6, 0.6) * (high - low)
    if name == "kl_optimal":
        return np.tan((1 - ramp * (n - 1) / n) * np.arctan(high) + ramp * (n - 1) / n * np.arctan(low))
    if name == "align_your_steps":  # NVIDIA's 10-step table for SD 1.5, interpolated in log sigma
        table = np.log([14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029])
        return np.exp(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), table[::-1]))[::-1]
    raise KeyError(name)


def codex_sigmas(schedule: str, n: int) -> np.ndarray:
    scheduler = scheduler_of(choose("sd15", "Euler", schedule))
    scheduler.set_timesteps(n)
    return scheduler.sigmas.numpy()[:-1].astype(np.float64)


EXACT_SCHEDULES = [n.name for n in a1111_names("discrete", "schedule") if n.exact and n.name != "automatic"]
NEAREST_SCHEDULES = [n.name for n in a1111_names("discrete", "schedule") if not n.exact]


@pytest.mark.parametrize("name", EXACT_SCHEDULES)
def test_an_exact_schedule_type_gives_a1111s_sigmas(name):
    # even spacing at fractional timesteps: diffusers interpolates sigma, k-diffusion its log, 1% apart at most;
    # SGM Uniform's fractional timesteps are whole ones in diffusers' trailing spacing, 2% apart at the last step
    tolerance = 1e-2 if name in ("uniform", "normal") else 2e-2 if name == "sgm_uniform" else 1e-4
    for n in (10, 20, 25):
        np.testing.assert_allclose(codex_sigmas(name, n), a1111_sigmas(name, n), rtol=tolerance)


@pytest.mark.parametrize("name", ["kl_optimal", "align_your_steps"])
def test_a_nearest_schedule_is_the_nearest(name):
    # Forge's other Align Your Steps tables (GITS, 11, 32 steps) are the same kind of curve and map the same way
    assert NEAREST_SCHEDULES == ["kl_optimal", "align_your_steps", *FORGE_SCHEDULES[1:]]
    mapping = next(n for n in a1111_names("discrete", "schedule") if n.name == name)
    candidates = [s.name for s in registry.samplers()[1] if s.family == "discrete" and s.name != "Automatic"]
    for n in (10, 20, 30):
        target = np.log(a1111_sigmas(name, n))
        distance = {c: float(np.mean(np.abs(np.log(codex_sigmas(c, n)) - target))) for c in candidates}
        assert min(distance, key=distance.get) == mapping.runs[0], distance


# -- the DPM++ solvers against k-diffusion's updates ---------------------------------------------------------


def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A smooth, non-linear stand-in for a model's denoised prediction (so that the solvers' orders matter)."""
    return x * 0.49 / (0.49 + sigma**2) + 0.1 * torch.tanh(x) * sigma / (1 + sigma)


def k_dpmpp(x, sigmas, noises, order=2, sde=False, heun=False):
    """DPM-Solver++ as k-diffusion (and so A1111 and Forge) runs it, from the solver's definition: multistep on the
    denoised predictions in lambda = -log sigma; the SDE variants (eta 1) take a doubled step and add fresh
    noise; "2M" corrects with the midpoint rule or, as "2M SDE Heun", the Heun (phi_2) one; "3M" adds phi_3."""
    history, steps = [], []  # earlier denoised predictions and step sizes, the latest first
    for index in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[index]), float(sigmas[index + 1])
        d = denoise(x, sigma)
        if sigma_next == 0:
            return d  # the last step lands on the prediction
        h = math.log(sigma / sigma_next)
        big = 2 * h if sde else h
        phi1 = -math.expm1(-big)
        phi2 = 1 - phi1 / big
        x = math.exp(-big) * x + phi1 * d
        if history:
            first = (d - history[0]) * h / steps[0]
            if order == 3 and len(history) > 1:
                second = (history[0] - history[1]) * h / steps[1]
                r, r1 = steps[0] / h, steps[1] / h
                bend = (first - second) / (r + r1)
                x = x + phi2 * (first + bend * r) - (phi2 / big - 0.5) * bend
            else:
                x = x + (phi2 if heun or order == 3 else 0.5 * phi1) * first
        if sde:
            x = x + sigma_next * math.sqrt(-math.expm1(-2 * h)) * noises[index]
        history.insert(0, d)
        steps.insert(0, h)
    return x


def diffusers_run(choice, x_noise, noises, n):
    """A resolved scheduler driven as a pipeline drives it, on the same stand-in denoiser and the same noise."""
    scheduler = build_scheduler(diffusers.DPMSolverMultistepScheduler.from_config(SD_CONFIG), choice, SD_CONFIG)
    scheduler.set_timesteps(n)
    sigmas = scheduler.sigmas.double()
    x = x_noise * sigmas[0] / (1 + sigmas[0] ** 2).sqrt()  # the scheduler's variance-preserving sample
    for index, t in enumerate(scheduler.timesteps):
        sigma = float(sigmas[index])
        ve = x * math.sqrt(1 + sigma**2)
        epsilon = (ve - denoise(ve, sigma)) / sigma
        noise = noises[index].float() if float(sigmas[index + 1]) > 0 else None
        x = scheduler.step(epsilon.float(), t, x.float(), variance_noise=noise).prev_sample.double()
    return x, sigmas


@pytest.mark.parametrize("name, schedule, reference", [
    ("DPM++ 2M", "karras", {}),
    ("DPM++ 2M SDE", "exponential", {"sde": True}),
    ("DPM++ 2M SDE Heun", "exponential", {"sde": True, "heun": True}),
])
def test_an_exact_dpm_solver_is_k_diffusions(name, schedule, reference):
    generator = torch.Generator().manual_seed(0)
    x_noise = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    noises = [torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in range(40)]
    for n in (8, 20):
        ours, sigmas = diffusers_run(choose("sd15", name, schedule, fallback="strict"), x_noise, noises, n)
        theirs = k_dpmpp(x_noise * sigmas[0], sigmas, noises, **reference)
        assert float((ours - theirs).abs().max()) < 1e-4, (name, n)


def test_dpm_3m_sde_runs_the_nearer_second_order_solver():
    """diffusers' third-order SDE solver is not k-diffusion's DPM++ 3M SDE (if this fails, diffusers changed it and
    the table may map "DPM++ 3M SDE" to it exactly); DPM++ 2M SDE Heun, which it runs, is nearer."""
    generator = torch.Generator().manual_seed(1)
    x_noise = torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64)
    noises = [torch.randn(1, 4, 8, 8, generator=generator, dtype=torch.float64) for _ in range(40)]
    nearest = choose("sd15", "DPM++ 3M SDE", "exponential")
    assert nearest.sampler == "DPM++ 2M SDE Heun" and "sampler" in nearest.approximate
    third_order = choose("sd15", "DPM++ 2M SDE", "exponential", fallback="strict")
    third_order = type(third_order)(**{**third_order.__dict__, "flags": {**third_order.flags, "solver_order": 3}})
    for n in (10, 20):
        ours, sigmas = diffusers_run(nearest, x_noise, noises, n)
        theirs = k_dpmpp(x_noise * sigmas[0], sigmas, noises, order=3, sde=True)
        diffusers_third, _ = diffusers_run(third_order, x_noise, noises, n)
        assert float((diffusers_third - theirs).abs().max()) > 1e-2
        assert float((ours - theirs).abs().max()) < float((diffusers_third - theirs).abs().max())


# -- the A1111 API reads names as A1111 does --------------------------------------------------------------------


@pytest.mark.parametrize("body, engine_key, sampler, scheduler, note", [
    ({"sampler_name": "Euler a", "scheduler": "automatic"}, "sd15", "Euler a", "Uniform", None),
    ({"sampler_name": "DPM++ 2M", "scheduler": "Automatic"}, "sd15", "DPM++ 2M", "Karras", None),
    ({"sampler_name": "DPM++ 2M SDE"}, "sd15", "DPM++ 2M SDE", "Exponential", None),
    ({"sampler_name": "DPM++ 2M Karras", "scheduler": "automatic"}, "sd15", "DPM++ 2M", "karras", None),
    ({}, "sd15", "Euler", "Uniform", None),  # no sampler: A1111's API default, Euler
    ({"sampler_name": "DDIM", "scheduler": "karras"}, "sd15", "DDIM", "DDIM", "A1111 runs DDIM on its own timesteps"),
    ({"sampler_name": "Euler z", "scheduler": "wobbly"}, "sd15", "DPM++ 2M", "Karras", "not an A1111 sampler"),
    ({"sampler_name": "DDIM", "scheduler": "normal"}, "flux", "DDIM", "normal", None),
])
def test_the_a1111_api_reads_a_name_as_a1111_does(body, engine_key, sampler, scheduler, note):
    request, asked = a1111_samplers.translate(body, registry.get_engine(engine_key), "txt2img")
    assert request == {"sampler": sampler, "scheduler": scheduler, "sampler_fallback": "nearest"}
    assert (note in "; ".join(asked["notes"])) if note else asked["notes"] == []
    choose(engine_key, request["sampler"], request["scheduler"])  # and it resolves


def test_the_a1111_schedulers_list_offers_a_schedule_only_with_the_samplers_that_run_it():
    rows = {row["name"]: row for row in a1111_samplers.scheduler_rows(registry.get_engine("sd15"))}
    assert list(rows) == A1111_SCHEDULES + FORGE_SCHEDULES
    assert rows["sgm_uniform"]["label"] == "SGM Uniform" and rows["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert rows["karras"]["default_rho"] == 7.0 and rows["simple"]["need_inner_model"] is True
    karras = rows["karras"]["codex_samplers"]
    assert "DPM++ 2M" in karras and not {"Euler a", "DDIM", "PLMS", "LCM"} & set(karras)
    assert {"Euler a", "LCM"} <= set(rows["simple"]["codex_samplers"])
    assert rows["kl_optimal"]["codex_samplers"] == []  # runs the nearest (DDIM spacing) everywhere
    flux = {row["name"]: row for row in a1111_samplers.scheduler_rows(registry.get_engine("flux"))}
    assert flux["karras"]["codex_samplers"] == [] and "Euler a" in flux["automatic"]["codex_samplers"]
    samplers = a1111_samplers.sampler_rows(registry.get_engine("flux"))
    assert [row["name"] for row in samplers] == A1111_SAMPLERS + FORGE_SAMPLERS
    assert samplers[6] == {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {}}


# -- the CLI: strict, unless asked for the nearest; recorded and replayed ------------------------------------------

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "steps": 2, "seed": 3}


def test_the_cli_refuses_a_name_it_cannot_run_exactly_naming_what_it_can(tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json",
                      json.dumps({**REQUEST, "sampler": "DPM++ 2S a"})])
    assert result.exit_code == 2
    assert "sampler: 'DPM++ 2S a' has no exact equivalent" in result.stderr
    assert "allowed: Euler, Euler a" in result.stderr
    assert '"sampler_fallback": "nearest" runs \'DPM++ SDE\' instead' in result.stderr
    wrong = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json",
                     json.dumps({**REQUEST, "sampler_fallback": "closest"})])
    assert wrong.exit_code == 2 and "sampler_fallback: got 'closest'" in wrong.stderr and "'nearest'" in wrong.stderr
    assert not any(tmp_path.iterdir())


def test_sampler_fallback_nearest_runs_records_and_replays(tmp_path):
    asked = {**REQUEST, "sampler": "DPM++ 2S a", "scheduler": "kl_optimal", "sampler_fallback": "nearest"}
    result = run_json("sd15", "txt2img", asked, tmp_path / "runs")
    info = result["info"]
    assert (info["sampler_in"], info["scheduler_in"]) == ("DPM++ 2S a", "kl_optimal")
    # kl_optimal's nearest, the DDIM spacing, is not one the single-step solver takes: the next nearest runs
    assert info["sampler_effective"] == "DPM++ SDE" and info["scheduler_effective"]["schedule"] == "Uniform"
    assert info["scheduler_class"] == "DPMSolverSinglestepScheduler" and info["sampler_fallback"] == "nearest"
    assert "sampler 'DPM++ 2S a' runs as 'DPM++ SDE'" in info["sampler_warning"]
    assert "scheduler 'kl_optimal' runs as 'Uniform'" in info["sampler_warning"]
    assert info["request"]["sampler"] == "DPM++ SDE" and info["request"]["sampler_fallback"] == "nearest"
    again = cli_run(["replay", result["run_dir"], "--out", str(tmp_path / "again"), "--check", "--quiet"])
    assert again.exit_code == 0, again.stderr
    replayed = json.loads(again.stdout)
    assert replayed["check"]["identical"] is True
    assert replayed["info"]["sampler_effective"] == "DPM++ SDE" and replayed["info"]["sampler_fallback"] == "nearest"
    assert Path(replayed["run_dir"]).is_dir()


# -- the generated docs -----------------------------------------------------------------------------------------


def test_the_checked_in_sampler_docs_are_the_tables_and_torch_free():
    import subprocess
    import sys

    from codex_core import sampler_docs

    expected = sampler_docs.samplers_markdown()
    assert sampler_docs.DOC_PATH.read_text(encoding="utf-8") == expected, (
        "docs/samplers.md is stale: regenerate it with `python -m codex_core.sampler_docs --write` "
        "(or `codex docs samplers > docs/samplers.md`)")
    assert cli_run(["docs", "samplers"]).stdout == expected
    script = ("import sys; from codex_core.sampler_docs import samplers_markdown as m; text = m(); "
              "heavy = [x for x in ('torch', 'diffusers') if x in sys.modules]; assert not heavy, heavy; "
              "sys.stdout.write(text)")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout == expected
    for line in ("| DPM++ 2S a | k_dpmpp_2s_a | DPM++ SDE | nearest | Karras |",
                 "| Euler a | k_euler_a, k_euler_ancestral | Euler | nearest | Automatic |",
                 "| sgm_uniform | SGM Uniform, SGMUniform | Simple | exact |"):
        assert line in expected
