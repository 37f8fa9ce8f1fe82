"""Test-only, for context-parallel ranks on a machine without an accelerator: put this folder on PYTHONPATH of
the ranks a test starts (``codex_core.testing.cpu_ranks_env``).

diffusers' ``ModelMixin._resolve_parallel_config`` places each rank with ``rank % torch.accelerator.device_count()``,
which divides by zero where there is no accelerator; the ranks then run on the CPU with gloo. A real run has
GPUs and never sees this file.
"""

import torch

if torch.accelerator.device_count() == 0:
    torch.accelerator.device_count = lambda: 1
