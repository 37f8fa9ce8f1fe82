"""How a run places and runs its model: the values of the run options (``codex_core.run_options``).

``Runtime`` is immutable and hashable: the model cache keys loaded models by it. The core's own
options (device, dtype, allow_pickle) are plain attributes; the plugins' options are keyword
arguments, ``Runtime(device="cuda", offload="model")``, read back as ``runtime.offload`` (an option
not given reads as its default, and is not part of the key: adding an option changes no key).
Which devices exist is the engine's to say (``Engine.resolve_runtime``: an engine on torch asks torch).
"""

from __future__ import annotations

from typing import Any, Mapping

from . import run_options

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, "fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


class Runtime:
    __slots__ = ("device", "dtype", "allow_pickle", "options")

    def __init__(self, device: str = "auto", dtype: str = "auto", allow_pickle: bool = False, **options: Any):
        if options:  # an option at its default is the same runtime as one without it
            table = run_options.table()
            options = {name: value for name, value in options.items()
                       if not (name in table and value == table[name].default)}
        for name, value in (("device", device), ("dtype", dtype), ("allow_pickle", allow_pickle),
                            ("options", tuple(sorted(options.items())))):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:  # only for names that are not attributes: the plugins' options
        if name.startswith("_"):
            raise AttributeError(name)
        for key, value in object.__getattribute__(self, "options"):
            if key == name:
                return value
        option = run_options.table().get(name)
        if option is None:
            raise AttributeError(f"Runtime has no run option {name!r} (no installed plugin registers it)")
        return option.default

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Runtime is immutable: use .replace(...)")

    def __reduce__(self):  # pickle and copy: through the constructor
        return (_runtime, (self.device, self.dtype, self.allow_pickle, dict(self.options)))

    def _key(self) -> tuple:
        return (self.device, self.dtype, self.allow_pickle, self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Runtime) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        given = "".join(f", {name}={value!r}" for name, value in self.options)
        return f"Runtime(device={self.device!r}, dtype={self.dtype!r}, allow_pickle={self.allow_pickle!r}{given})"

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> "Runtime":
        """The runtime of these option values (unchecked); options left out keep their defaults."""
        return cls(**values)

    def values(self) -> dict[str, Any]:
        """Every registered option's value, in table order (and any given option no plugin registers)."""
        return {**{name: getattr(self, name) for name in run_options.table()}, **dict(self.options)}

    def replace(self, **changes: Any) -> "Runtime":
        """A copy with some options changed (the core's and the plugins' alike)."""
        return Runtime(**{"device": self.device, "dtype": self.dtype, "allow_pickle": self.allow_pickle,
                          **dict(self.options), **changes})

    def check(self) -> "Runtime":
        """Each option's value checked, in table order: a UsageError names the first option that cannot run."""
        from .errors import UsageError

        table = run_options.table()
        for name, value in self.options:
            if name not in table:
                raise UsageError(f"run option {name}={value!r}: no installed plugin declares it")
        for name, option in table.items():
            option.validate(getattr(self, name), self)
        return self

    def on_device(self, device: str, gpu_dtype: str) -> "Runtime":
        """This runtime on a concrete ``device``: dtype ``auto`` is the engine's GPU dtype off the CPU, fp32 on it."""
        dtype = DTYPES[self.dtype] or ("float32" if device == "cpu" else gpu_dtype)
        return self.replace(device=device, dtype=dtype).check()  # e.g. an option that needs a GPU, on the cpu


def _runtime(device: str, dtype: str, allow_pickle: bool, options: dict[str, Any]) -> Runtime:
    return Runtime(device, dtype, allow_pickle, **options)
