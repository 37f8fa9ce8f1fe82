"""What a rank of a ``--parallel`` run does (imports torch): join the process group, split the declared
denoisers' attention with diffusers' ``enable_parallelism``, and draw the same noise as every other rank.

The ranks come from the environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT):
``codex run --processes N`` starts torchrun, and the service's Ray gangs set the same variables. Every rank
loads the whole pipeline; only the denoisers' attention is split (the text encoders and the VAE run whole on
every rank, which is why rank 0 alone need export).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from codex_core import Job, Runtime, UsageError
from codex_core.parallel import local_rank, parse, ranks_problem


def rank_runtime(runtime: Runtime) -> Runtime:
    """The runtime on this rank: refused when the ranks present are not the layout's; each rank on its own GPU
    (cuda:LOCAL_RANK) where the device is cuda."""
    layout = parse(runtime.parallel)
    if layout is None:
        return runtime
    problem = ranks_problem(runtime)
    if problem:
        raise UsageError(problem, hint=f"codex run ... --parallel {layout} --processes {layout.world_size}")
    if torch.accelerator.device_count() == 0:
        # diffusers places rank r on accelerator r % count (ModelMixin._resolve_parallel_config)
        raise UsageError(f"--parallel {layout}: needs GPUs (diffusers places each rank on one); this machine has "
                         "none", hint="run it where there are GPUs, or drop --parallel")
    if runtime.device == "cuda":
        if local_rank() >= torch.cuda.device_count():  # two ranks on one GPU: nccl refuses, after the load
            raise UsageError(f"--parallel {layout}: rank {local_rank()} of this node has no GPU of its own (this "
                             f"machine has {torch.cuda.device_count()})", hint="one rank per GPU: fewer --processes")
        return runtime.replace(device=f"cuda:{local_rank()}")
    if runtime.device == "mps":
        raise UsageError(f"--parallel {layout}: needs CUDA GPUs (or the CPU, to test); mps has no process group")
    return runtime


def join_process_group(runtime: Runtime) -> None:
    """The default process group from the environment, once per process: nccl between GPUs, gloo on the CPU."""
    if dist.is_initialized():
        return
    if runtime.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(runtime.device))
        dist.init_process_group("nccl", device_id=torch.device(runtime.device))
    else:
        dist.init_process_group("gloo")


def split_denoisers(engine, pipe, runtime: Runtime) -> dict[str, Any] | None:
    """``enable_parallelism`` on each declared denoiser the pipeline has; what was split, for info.parallel."""
    layout = parse(runtime.parallel)
    if layout is None:
        return None
    from diffusers import ContextParallelConfig
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    join_process_group(runtime)
    declared = engine.context_parallel
    split, mesh = [], None
    for name in declared.denoisers:
        module = getattr(pipe, name, None)
        if module is None:
            continue  # e.g. Wan 2.2 5B's absent transformer_2
        if runtime.attention == "default":
            active = _AttentionBackendRegistry.get_active_backend()[0]
            if not _AttentionBackendRegistry._is_context_parallel_available(active):
                # the process-wide default cannot split: native can, and computes the same attention
                module.set_attention_backend("native")
        # the experts of one pipeline share one device mesh (one set of process groups)
        config = ContextParallelConfig(ulysses_degree=layout.ulysses, ring_degree=layout.ring, mesh=mesh,
                                       ulysses_anything=layout.ulysses_anything, ring_anything=layout.ring_anything)
        plan = declared.plans[name]() if name in declared.plans else None
        try:
            module.enable_parallelism(config=config, cp_plan=plan)
        except ValueError as exc:
            raise UsageError(f"--parallel {layout}: {name}: {str(exc).splitlines()[0][:300]}") from None
        mesh = config._mesh
        split.append(name)
    return {**layout.as_json(), "split": split, "backend": dist.get_backend()}


def agree_on_seeds(job: Job) -> None:
    """Rank 0's seed on every rank: the noise each rank draws from it is then the same (a request without a seed
    drew a random one on each rank). Recorded by rank 0 only, whose seed it already was."""
    if not dist.is_initialized() or job.seed is None:
        return
    seeds = [job.seed, job.seeds]
    dist.broadcast_object_list(seeds, src=0)
    if seeds[0] != job.seed:
        job.params = job.params.model_copy(update={"seed": seeds[0]})
    job.seed, job.seeds = seeds


def agreed_stop(job: Job, asked: bool) -> bool:
    """Whether the ranks of a --parallel run stop early at this step: one of them was asked (a rank alone that
    stopped would leave the others waiting in the next step's all-to-all). Every rank calls it at every step, so
    they all decide at the same step; a run without --parallel decides alone, at no cost."""
    if parse(getattr(job.runtime, "parallel", "off")) is None or not dist.is_initialized():
        return asked
    device = job.runtime.device if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([int(asked)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
