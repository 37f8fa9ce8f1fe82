"""Control-image preprocessors: what turns a user's picture into the image a ControlNet reads (an edge map,
a depth map, ...), registered by plugins through ``codex_register_preprocessors``.

A preprocessor is data plus one function: its name, its parameters as a small strict pydantic model (the
ranges are part of the model, so a bad threshold is refused before anything runs, naming the parameter),
the annotator weight files it needs (looked for in the models folders of kind ``annotators``; a missing one
is a UsageError naming the file and the folder to put it in) and ``run(image, params) -> image``.

The core registers the ones that need no weights (``default_plugins.preprocessors``); third parties add more
through the same hook. Nothing here imports a heavy library: a preprocessor imports what it needs when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UsageError

ANNOTATORS = "annotators"  # the models-folder kind that holds annotator weights


class PreprocessorParams(BaseModel):
    """Base of a preprocessor's parameters: strict, no unknown keys, finite numbers (a preprocessor without
    parameters uses it as is)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Preprocessor:
    name: str
    description: str
    # run(image, params): the image is 8-bit RGB (EXIF orientation applied); returns the control image
    run: Callable[[Image.Image, PreprocessorParams], Image.Image]
    parameters: type[PreprocessorParams] = PreprocessorParams
    # annotator weight files (file names) looked for in the ``annotators`` models folders
    needs: tuple[str, ...] = ()
    # weights found by a rule rather than by file name (e.g. a model folder chosen by its name): locate(field)
    # returns {what: path} or raises a UsageError naming ``field`` and what to put where. ``needs`` then says in
    # words what it looks for (listed, not looked up), so a front end still shows that weights are needed.
    locate: Callable[[str], dict[str, Path]] | None = None

    def problems(self) -> list[str]:
        """What is wrong with this registration (the registry skips it with a warning)."""
        found = []
        if not self.name or self.name != self.name.strip() or " " in self.name:
            found.append(f"name {self.name!r} must be one word")
        if not (isinstance(self.parameters, type) and issubclass(self.parameters, PreprocessorParams)):
            found.append("parameters must be a PreprocessorParams subclass")
        if not callable(self.run):
            found.append("run must be callable")
        if self.locate is not None and not callable(self.locate):
            found.append("locate must be callable or None")
        return found

    def describe(self) -> dict[str, Any]:
        """What `codex preprocess --list` shows: name, description, each parameter's default and range, needs."""
        schema = self.parameters.model_json_schema().get("properties", {})
        return {"name": self.name, "description": self.description,
                "parameters": {name: {key: value for key, value in prop.items() if key != "title"}
                               for name, prop in schema.items()},
                "needs": list(self.needs)}


def installed() -> dict[str, Preprocessor]:
    """Every registered preprocessor by name (``codex_register_preprocessors``; collected once per process; a
    name registered twice keeps the first registration pluggy calls, as for exporters)."""
    from .plugins import contribution, first_wins, valid_registrations

    def collect() -> dict[str, Preprocessor]:
        valid = valid_registrations("codex_register_preprocessors", "preprocessor", Preprocessor)
        return {name: item for name, (_, item) in first_wins("preprocessor", valid, lambda p: p.name,
                                                              lambda p: p.name).items()}

    return contribution("preprocessors", collect)


def get(name: str, field: str = "preprocess") -> Preprocessor:
    """The preprocessor called ``name``; a UsageError naming ``field`` and the known names otherwise."""
    found = installed()
    if name not in found:
        raise UsageError(f"{field}: unknown preprocessor {name!r}; known: {', '.join(sorted(found)) or 'none'}",
                         hint="`codex preprocess --list` lists them with their parameters")
    return found[name]


def parameter_problems(preprocessor: Preprocessor, values: dict[str, Any], field: str) -> list[str]:
    """One line per bad parameter, each naming ``field.<parameter>``, the value and what is allowed."""
    try:
        preprocessor.parameters.model_validate(values)
    except ValidationError as exc:
        return [_problem(preprocessor, error, field) for error in exc.errors(include_url=False)]
    return []


def _problem(preprocessor: Preprocessor, error: dict[str, Any], field: str) -> str:
    parameter = ".".join(str(part) for part in error["loc"])
    # a request field reads "controls.0.preprocess_params.low_threshold", a CLI option "--param low_threshold"
    where = field if not parameter else f"{field} {parameter}" if field.startswith("--") else f"{field}.{parameter}"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(preprocessor.parameters.model_fields) or "none"
        return f"{where}: {preprocessor.name} has no such parameter; its parameters: {allowed}"
    if error["type"] == "missing":
        return f"{where}: required"
    shown = f"got {error['input']!r}: " if error["loc"] else ""
    return f"{where}: {shown}{error['msg']}"


def validated(preprocessor: Preprocessor, values: dict[str, Any], field: str) -> PreprocessorParams:
    """The parameters as the preprocessor's model; a UsageError naming each bad one."""
    problems = parameter_problems(preprocessor, values, field)
    if problems:
        raise UsageError("; ".join(problems), hint=f"`codex preprocess --list` shows {preprocessor.name}'s ranges")
    return preprocessor.parameters.model_validate(values)


def weight_files(preprocessor: Preprocessor, field: str = "preprocess") -> dict[str, Path]:
    """Each file the preprocessor needs, found in the annotators folders; a UsageError naming the first missing
    one and where to put it. A preprocessor with ``locate`` finds its own (same contract)."""
    from .model_files import folders, lookup

    if preprocessor.locate is not None:
        return preprocessor.locate(field)
    found = {}
    for name in preprocessor.needs:
        match = lookup(ANNOTATORS, name, field)
        if match is None:
            where = [str(folder) for folder in folders(ANNOTATORS)]
            raise UsageError(f"{field}: {preprocessor.name} needs the annotator weights {name!r}, which are not in "
                             f"the annotators folders ({', '.join(where) or 'none configured'})",
                             hint=f"put {name} in {where[0] if where else 'models/annotators'} "
                                  "(`codex models --kind annotators` lists what is there)")
        found[name] = match.path
    return found


def run(name: str, image: Image.Image, values: dict[str, Any] | None = None, field: str = "preprocess",
        params_field: str = "preprocess_params") -> Image.Image:
    """Check the name, the parameters and the weights, then run the preprocessor on ``image`` (any mode: made
    8-bit RGB first, EXIF orientation applied, as every input image). Errors name ``field`` (the name, the
    weights) or ``params_field`` (a parameter)."""
    from .images import prepare

    preprocessor = get(name, field)
    params = validated(preprocessor, values or {}, params_field)
    weight_files(preprocessor, field)
    rgb, _ = prepare(image)
    return preprocessor.run(rgb, params)
