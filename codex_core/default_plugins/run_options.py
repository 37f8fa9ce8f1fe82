"""The core's run options: where a model runs, in what dtype, and whether pickle weights may load."""

from codex_core.hookspecs import hookimpl
from codex_core.run_options import RunOption
from codex_core.runtime import DEVICES, DTYPES


def _device(value: str, runtime) -> str | None:
    if value.split(":")[0] not in DEVICES:
        return f"unknown device {value!r}; allowed: auto, cpu, cuda, cuda:N, mps"
    return None


DEVICE = RunOption("device", "--device", "auto", "auto, cpu, cuda, cuda:N or mps.", check=_device,
                   served=False)  # `codex serve --devices` gives each worker its own
DTYPE = RunOption("dtype", "--dtype", "auto", "auto, fp32, fp16 or bf16.", choices=tuple(DTYPES), noun="dtype")
ALLOW_PICKLE = RunOption("allow_pickle", "--allow-pickle", False,
                         "Allow pickle-based weights (.bin/.ckpt). Only for files you trust.",
                         record=lambda runtime: {}, replay=False, served=False)  # a served request never loads pickle


@hookimpl
def codex_register_run_options(register):
    for option in (DEVICE, DTYPE, ALLOW_PICKLE):
        register(option)
