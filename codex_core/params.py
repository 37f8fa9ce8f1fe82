"""Request parameters: strict pydantic models with the canonical field names.

Engines subclass the task bases below and may add fields, never rename these. Validation is strict
(``"20"`` is not an integer), unknown keys are rejected with a did-you-mean, and shape rules are
checked here, before anything is loaded. Task names are open: a params model says what its task
produces with ``output_kind`` ("image" or "video"), and an engine maps any task name to one.
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from typing import Annotated, Any, Callable, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic import model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import ParamError

OUTPUT_KINDS = ("image", "video")
MAX_SEED = 2**32 - 1


def _readable_image(value: str) -> str:
    """The image decodes in full (a folder, an unreadable file or a decompression bomb is refused here)."""
    from .images import open_image

    open_image(value).close()
    return value


class InputFile:
    """Marks a request field whose value is the path of an input file: info.json records its sha256,
    and `codex replay` finds it as the original run did and says when its content changed."""


INPUT_FILE = InputFile()
# "x-codex-input" tells a form (codex-ui) to offer an image upload for the field
ImagePath = Annotated[str, AfterValidator(_readable_image),
                      Field(description="Path to an image file.", json_schema_extra={"x-codex-input": "image"}),
                      INPUT_FILE]


def _readable_video(value: str) -> str:
    from .videos import readable_video

    return readable_video(value)


# "x-codex-input": "video" tells a form to offer a video upload; Job.input_video decodes it
VideoPath = Annotated[str, AfterValidator(_readable_video),
                      Field(description="Path to a video file (MP4, WebM, GIF, ...).",
                            json_schema_extra={"x-codex-input": "video"}),
                      INPUT_FILE]


def field_metadata(info: Any) -> list:
    """A params field's metadata, with that of its type's members: an optional or a list of input files
    (``VideoPath | None``, ``list[VideoPath]``) keeps ``INPUT_FILE`` on the member, not on the field."""
    import typing

    found = list(info.metadata)
    pending = list(typing.get_args(info.annotation))
    while pending:
        arg = pending.pop()
        found += getattr(arg, "__metadata__", ())
        pending += [inner for inner in typing.get_args(arg) if not isinstance(inner, (str, int, float))]
    return found


def is_input_file(info: Any) -> bool:
    """Whether a params field names an input file (``INPUT_FILE``), or a list of them, optional or not."""
    return any(isinstance(item, InputFile) for item in field_metadata(info))


def input_files(params: BaseModel, prefix: str = "") -> dict[str, str]:
    """``{"init_image": path, "mode_lora.path": path, "loras.0.path": ...}``: every input-file field that is set,
    nested ones and list items too."""
    found = {}
    for name, info in type(params).model_fields.items():
        value = getattr(params, name)
        if isinstance(value, BaseModel):
            found.update(input_files(value, f"{prefix}{name}."))
        elif isinstance(value, list):  # e.g. "loras.1.path", or "images.1" (a list of input files)
            is_file = is_input_file(info)
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    found.update(input_files(item, f"{prefix}{name}.{index}."))
                elif is_file and isinstance(item, str):
                    found[f"{prefix}{name}.{index}"] = item
        elif isinstance(value, str) and is_input_file(info):
            found[prefix + name] = value
    return found


def image_size(path: str) -> tuple[int, int]:
    """The image's size as viewers show it (EXIF orientation applied)."""
    from .images import oriented_size

    return oriented_size(path)


MAX_SIZE = 16384  # the largest width or height an image task takes (an engine may lower it)


def _nearest_multiples(value: int, multiple: int) -> str:
    low = (value // multiple) * multiple
    high = low + multiple
    return f"{low} or {high}" if low >= multiple else f"{high}"


def _text_problem(text: str) -> str | None:
    """Why a request string cannot be used as text (lone surrogates, control characters), or None."""
    for index, char in enumerate(text):
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return f"contains a lone surrogate (U+{code:04X}) at character {index}; the text must be valid Unicode"
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            return (f"contains the control character U+{code:04X} at character {index}; remove it (tabs and "
                    "line breaks are fine)")
    return None


def _strings(value: Any, path: tuple) -> list[tuple[tuple, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _strings(sub, (*path, key))]
    if isinstance(value, list):
        return [item for index, sub in enumerate(value) for item in _strings(sub, (*path, index))]
    return []


class ParamsBase(BaseModel):
    """Fields every request has, text-conditioned or not (an image-conditioned model takes no prompt)."""

    # allow_inf_nan=False: NaN and infinities (which Python's JSON reader accepts) are "not a finite number"
    model_config = ConfigDict(strict=True, extra="forbid", validate_default=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _text_is_text(cls, data: Any) -> Any:
        """Strings a tokenizer, a PNG text chunk or a file system would reject fail here, naming the field."""
        if isinstance(data, dict):
            problems = [(path, problem) for path, text in _strings(data, ()) if (problem := _text_problem(text))]
            if problems:
                raise ValidationError.from_exception_data(cls.__name__, [
                    InitErrorDetails(type=PydanticCustomError("text", problem), loc=path, input="<text>")
                    for path, problem in problems])
        return data

    # What the task produces: "image" (PNG by default) or "video" (MP4 by default).
    output_kind: ClassVar[str] = "image"
    # The largest output width or height, also for sizes that come from an init image.
    max_size: ClassVar[int] = MAX_SIZE
    # Spatial stride of the engine's latent space; width and height must be multiples of it.
    size_multiple: ClassVar[int] = 8
    # Where an engine's own fields are shown (schema, errors, docs): field -> the field it follows
    # (merged over the class and its bases).
    show_after: ClassVar[dict[str, str]] = {}

    steps: int = Field(ge=1, le=1000, description="Denoising steps.")
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] | None = Field(
        None, description="Random seed; omitted means a random seed, recorded in info.json."
    )
    sampler: str | None = Field(None, description="Sampler name, e.g. 'Euler a' or 'DPM++ 2M' (`codex samplers`).")
    scheduler: str | None = Field(None, description="Schedule type, e.g. 'Automatic' or 'Karras'.")
    sampler_fallback: Literal["strict", "nearest"] = Field(
        "strict", description="'strict': a sampler or schedule type the engine cannot run exactly is an error; "
                              "'nearest': run the nearest one it honours instead (A1111's 'DPM++ 2S a' or 'Karras' "
                              "on a flow model), reported in info.json's sampler_warning.")
    batch_size: int = Field(1, ge=1, le=64, description="Images per request.")

    @field_validator("width", "height", check_fields=False)
    @classmethod
    def _size_on_stride(cls, value: int | None) -> int | None:
        multiple = cls.size_multiple
        if value is not None and value % multiple:
            raise PydanticCustomError(
                "size_multiple",
                "{value} is not a multiple of {multiple}; nearest valid values: {nearest}",
                {"value": value, "multiple": multiple, "nearest": _nearest_multiples(value, multiple)},
            )
        return value


class Params(ParamsBase):
    """Text-conditioned requests: the canonical prompt fields."""

    prompt: str = Field(description="What to generate.")
    negative_prompt: str = Field("", description="What to steer away from.")
    cfg: float = Field(ge=0.0, le=50.0, description="Classifier-free guidance scale.")


class Txt2ImgParams(Params):
    width: int = Field(ge=8, le=16384, description="Output width in pixels.")
    height: int = Field(ge=8, le=16384, description="Output height in pixels.")


# How many steps an init-image task denoises, given steps and strength. Pipelines count one of two ways,
# and an engine's params say which its pipeline uses (``steps_rule``); the conformance suite checks it
# against the steps the pipeline actually ran.
STEP_RULES: dict[str, tuple[str, Callable[[int, float], int]]] = {
    # the UNet img2img/inpaint pipelines (and most others): the last int(steps x strength) steps
    "floor": ("int(steps x strength)", lambda steps, strength: min(int(steps * strength), steps)),
    # the flow-matching img2img/inpaint pipelines that keep the fraction: steps - int(steps - steps x strength)
    "keep_fraction": ("steps - int(steps - steps x strength)",
                      lambda steps, strength: steps - int(max(steps - steps * strength, 0))),
}


class _Strength(Params):
    """Tasks that re-noise an image by ``strength`` and denoise only that part of the schedule."""

    steps_rule: ClassVar[str] = "floor"  # how the engine's pipeline counts its steps (a key of STEP_RULES)

    def denoising_steps(self) -> int:
        """Steps the pipeline runs at this strength, by the params' ``steps_rule``."""
        return STEP_RULES[self.steps_rule][1](self.steps, self.strength)

    @model_validator(mode="after")
    def _some_denoising(self):
        if self.denoising_steps() < 1:
            # the fewest steps that leave one at this strength, if the steps range (<= 1000) has one
            least = next((steps for steps in range(self.steps, 1001)
                          if STEP_RULES[self.steps_rule][1](steps, self.strength) >= 1), None)
            steps_hint = f"raise steps to {least} or " if least else ""
            raise PydanticCustomError(
                "strength_steps", "strength: {strength} of steps {steps} leaves no denoising step (the pipeline runs "
                "{rule} = 0); {steps_hint}raise strength to {strength_needed}",
                {"strength": self.strength, "steps": self.steps, "steps_hint": steps_hint,
                 "rule": STEP_RULES[self.steps_rule][0], "strength_needed": f"{1 / self.steps:g}"})
        return self


class _InitImageParams(_Strength):
    """img2img-like tasks: keep the init image's size unless width/height are given."""

    init_image: ImagePath
    strength: float = Field(gt=0.0, le=1.0, description="How much of the init image is re-noised (1 = all).")
    width: int | None = Field(None, ge=8, le=16384, description="Resize the init image to this width first.")
    height: int | None = Field(None, ge=8, le=16384, description="Resize the init image to this height first.")

    def target_size(self) -> tuple[int, int]:
        width, height = image_size(self.init_image)
        return (self.width or width, self.height or height)

    @model_validator(mode="after")
    def _init_image_on_stride(self):
        if (self.width is None) != (self.height is None):
            given, missing = ("width", "height") if self.height is None else ("height", "width")
            raise PydanticCustomError(
                "size_pair", "{missing}: required when {given} is given (pass both to resize the init image, "
                "or neither to keep its size)", {"missing": missing, "given": given})
        if self.width is not None:
            return self
        width, height = self.target_size()
        multiple = self.size_multiple
        for name, value in (("width", width), ("height", height)):
            if value > self.max_size:
                raise PydanticCustomError(
                    "image_size", "init_image: its {name} {value} is over the largest output {name}, {limit}; pass "
                    "width and height to resize it first", {"name": name, "value": value, "limit": self.max_size})
            if value % multiple:
                raise PydanticCustomError(
                    "size_multiple",
                    "init_image: its {name} {value} is not a multiple of {multiple}; pass \"{name}\" "
                    "(nearest valid: {nearest}) to resize it first, or crop the image",
                    {"name": name, "value": value, "multiple": multiple,
                     "nearest": _nearest_multiples(value, multiple)},
                )
        return self


class Img2ImgParams(_InitImageParams):
    pass


class InpaintParams(_InitImageParams):
    mask_image: ImagePath

    @model_validator(mode="after")
    def _mask_matches_image(self):
        if self.width is None and self.height is None and image_size(self.mask_image) != image_size(self.init_image):
            raise PydanticCustomError(
                "mask_size",
                "mask_image: its size {mask} differs from init_image's {image}; give both the same size "
                "(or pass width/height to resize both)",
                {"mask": "x".join(map(str, image_size(self.mask_image))),
                 "image": "x".join(map(str, image_size(self.init_image)))},
            )
        return self


class EditParams(Params):
    """Instruction editing: the prompt says what to change in one or more reference images.

    ``max_images``: how many reference images the engine's pipeline takes (its params set it). The output
    size follows the pipeline's own rule from the first image (``edit_size``, which an engine's params
    override with its pipeline's arithmetic) unless ``width`` and ``height`` are given.
    """

    max_images: ClassVar[int] = 1
    # the schema states the limit (maxItems on images), so that a client (codex-ui's Edit tab) can say it before
    # submitting; a ClassVar is not a field, so pydantic would not emit it
    model_config = ConfigDict(json_schema_extra=lambda schema, model: _max_items(schema, model.max_images))

    images: Annotated[list[ImagePath], INPUT_FILE] = Field(
        min_length=1, description="Reference images (paths; inline base64 on the service): the first is the one "
                                  "edited and sets the output size unless width/height are given.",
        json_schema_extra={"x-codex-input": "images"})
    width: int | None = Field(None, ge=8, le=16384, description="Output width (with height); default: the "
                                                                 "pipeline's own rule from the first image.")
    height: int | None = Field(None, ge=8, le=16384, description="Output height (with width).")

    def edit_size(self, first: tuple[int, int]) -> tuple[int, int, str]:
        """(width, height, why): the output size the pipeline gives for a first image of size ``first``.
        This default keeps the first image's size; engines override it with their pipeline's rule."""
        if self.width is not None:
            return self.width, self.height, "the request's width and height"
        return first[0], first[1], f"the first image's size ({first[0]}x{first[1]})"

    def first_image_size(self) -> tuple[int, int]:
        """The first reference image's size as viewers show it (EXIF orientation applied)."""
        return image_size(self.images[0])

    def target_size(self) -> tuple[int, int]:
        width, height, _ = self.edit_size(self.first_image_size())
        return width, height

    @model_validator(mode="after")
    def _images_and_size(self):
        if len(self.images) > self.max_images:
            raise PydanticCustomError(
                "too_many_images", "images: got {count} images; this model takes at most {limit} reference "
                "image{plural}", {"count": len(self.images), "limit": self.max_images,
                                  "plural": "" if self.max_images == 1 else "s"})
        if (self.width is None) != (self.height is None):
            given, missing = ("width", "height") if self.height is None else ("height", "width")
            raise PydanticCustomError(
                "size_pair", "{missing}: required when {given} is given (pass both, or neither to let the first "
                "image decide)", {"missing": missing, "given": given})
        width, height = self.target_size()
        for name, value in (("width", width), ("height", height)):
            if value > self.max_size:
                raise PydanticCustomError(
                    "image_size", "images: the output {name} would be {value}, over the largest, {limit}; pass "
                    "width and height", {"name": name, "value": value, "limit": self.max_size})
            if self.width is None and value % self.size_multiple:
                raise PydanticCustomError(
                    "size_multiple", "images: the first image gives an output {name} of {value}, not a multiple "
                    "of {multiple}; pass width and height (nearest valid: {nearest})",
                    {"name": name, "value": value, "multiple": self.size_multiple,
                     "nearest": _nearest_multiples(value, self.size_multiple)})
        return self


def _max_items(schema: dict[str, Any], limit: int) -> None:
    """``maxItems`` on the schema's ``images`` (an edit model's ``max_images``)."""
    images = schema.get("properties", {}).get("images")
    if images is not None:
        images["maxItems"] = limit


class UpscaleParams(_Strength):
    """Hires fix: resize the init image by ``upscale_factor``, then refine it with img2img."""

    init_image: ImagePath
    upscale_factor: float = Field(gt=1.0, le=8.0, description="Target size over the init image's size.")
    strength: float = Field(gt=0.0, le=1.0, description="How much the upscaled image is re-noised.")

    def target_size(self) -> tuple[int, int]:
        width, height = image_size(self.init_image)
        return (round(width * self.upscale_factor), round(height * self.upscale_factor))

    @model_validator(mode="after")
    def _target_on_stride(self):
        width, height = image_size(self.init_image)
        multiple = self.size_multiple
        for name, value in (("width", width), ("height", height)):
            exact = value * self.upscale_factor
            if exact > self.max_size:
                raise PydanticCustomError(
                    "image_size", "upscale_factor: {factor} turns the init image's {name} {value} into {exact}, over "
                    "the largest output {name}, {limit}", {"factor": self.upscale_factor, "name": name, "value": value,
                                                           "exact": f"{exact:g}", "limit": self.max_size})
            if exact != int(exact) or int(exact) % multiple:
                raise PydanticCustomError(
                    "upscale_size",
                    "upscale_factor: {factor} turns the init image's {name} {value} into {exact}, which is not "
                    "a whole multiple of {multiple}; nearest valid {name}s: {nearest}",
                    {"factor": self.upscale_factor, "name": name, "value": value, "exact": f"{exact:g}",
                     "multiple": multiple, "nearest": _nearest_multiples(int(exact), multiple)},
                )
        return self


# --- turning pydantic errors into one clear line per field ------------------------------------

# pydantic's own range errors; with "*_type" and "*_parsing" errors they get the field's allowed
# values appended. Our own checks (PydanticCustomError) already say what is allowed.
RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error",
                          "enum", "finite_number", "multiple_of", "string_too_short", "string_too_long",
                          "too_short", "too_long"})


def _allowed(model: type[BaseModel], field: str) -> str | None:
    prop = model.model_json_schema().get("properties", {}).get(field)
    if not prop:
        return None
    options = prop.get("anyOf", [prop])
    parts = []
    for option in options:
        kind = option.get("type")
        if kind in ("null", "array", "object"):  # a list or object's own errors say what is allowed
            continue
        if "enum" in option:
            parts.append("one of " + ", ".join(repr(v) for v in option["enum"]))
            continue
        bounds = []
        for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
            if key in option:
                bounds.append(f"{sign} {option[key]}")
        parts.append(" ".join(filter(None, [{"integer": "an integer", "number": "a number", "string": "a string",
                                                 "boolean": "true or false"}.get(kind, kind), " and ".join(bounds)])))
    return " or ".join(p for p in parts if p) or None


# The order fields are shown in (schema, error messages): what a user reads first comes first.
CANONICAL_ORDER = ("prompt", "negative_prompt", "images", "init_image", "mask_image", "width", "height", "num_frames", "fps",
                   "steps", "cfg", "strength", "upscale_factor", "seed", "sampler", "scheduler", "sampler_fallback",
                   "mode", "batch_size")


def ordered_fields(model: type[BaseModel]) -> list[str]:
    """Canonical fields in canonical order; an engine's own fields after the field its ``show_after``
    names, else at the end, in declaration order."""
    names = list(model.model_fields)
    ordered = sorted((n for n in names if n in CANONICAL_ORDER), key=CANONICAL_ORDER.index)
    after: dict[str, str] = {}
    for klass in reversed(model.__mro__):  # every class's own show_after, mixins included
        after.update(vars(klass).get("show_after", {}))
    rest = [n for n in names if n not in CANONICAL_ORDER]
    for name in [n for n in rest if after.get(n) in ordered]:
        anchor = ordered.index(after[name])
        while anchor + 1 < len(ordered) and after.get(ordered[anchor + 1]) == after[name]:
            anchor += 1  # several fields after one anchor keep their declaration order
        ordered.insert(anchor + 1, name)
    return ordered + [n for n in rest if n not in ordered]


def format_errors(model: type[BaseModel], error: ValidationError) -> list[str]:
    fields = ordered_fields(model)
    problems = []
    for err in error.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            guess = difflib.get_close_matches(loc, fields, n=1, cutoff=0.6)
            suggestion = f"did you mean '{guess[0]}'? " if guess else ""
            problems.append(f"{loc}: unknown field; {suggestion}allowed fields: {', '.join(fields)}")
        elif kind == "missing":
            problems.append(f"{loc}: required field is missing")
        elif kind == "finite_number" or (isinstance(err.get("input"), float) and not math.isfinite(err["input"])):
            allowed = _allowed(model, err["loc"][0])
            problems.append(f"{loc}: got {err['input']!r}: not a finite number" + (f" (allowed: {allowed})"
                                                                                     if allowed else ""))
        elif kind == "text":
            problems.append(f"{loc}: {err['msg']}")
        elif not loc:
            problems.append(err["msg"])
        else:
            # our own checks already say what is allowed; pydantic's type/range errors get the field's range
            builtin = kind.endswith(("_type", "_parsing")) or kind in RANGE_ERRORS
            allowed = _allowed(model, err["loc"][0]) if builtin else None
            text = f"{loc}: got {err['input']!r}: {err['msg']}"
            problems.append(f"{text} (allowed: {allowed})" if allowed else text)
    return problems


def validate(model: type[ParamsBase], data: dict[str, Any], engine: str, task: str) -> Params:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ParamError(format_errors(model, exc), engine, task,
                         hint=f"see `codex schema {engine} {task}` for every field") from None


# --- video ------------------------------------------------------------------------------------


class VideoFields(ParamsBase):
    """Video tasks. ``frame_multiple``: the VAE's temporal stride; ``num_frames`` must be k*stride + 1."""

    output_kind = "video"
    frame_multiple: ClassVar[int] = 4

    width: int = Field(ge=16, le=8192, description="Frame width in pixels.")
    height: int = Field(ge=16, le=8192, description="Frame height in pixels.")
    num_frames: int = Field(ge=1, le=1024, description="Frames in the video (temporal stride k + 1).")
    fps: float = Field(gt=0, le=240, description="Frames per second of the exported video.")
    batch_size: int = Field(1, ge=1, le=1, description="Videos per request (one).")

    @field_validator("num_frames")
    @classmethod
    def _frames_on_stride(cls, value: int) -> int:
        stride = cls.frame_multiple
        if stride > 1 and value % stride != 1:
            low = (value - 1) // stride * stride + 1
            nearest = f"{low} or {low + stride}" if low >= 1 and low != value else f"{low + stride}"
            raise PydanticCustomError(
                "frame_multiple", "{value} is not {stride}k+1 frames; nearest valid values: {nearest}",
                {"value": value, "stride": stride, "nearest": nearest})
        return value


class Txt2VidParams(VideoFields, Params):
    pass


class Img2VidParams(VideoFields, Params):
    init_image: ImagePath = Field(description="The first frame / conditioning image.")


class ImageOnlyImg2VidParams(VideoFields):
    """img2vid conditioned on the image alone (no prompt)."""

    init_image: ImagePath = Field(description="The first frame / conditioning image.")


class VideoResampleFields(ParamsBase):
    """Tasks that take a video input: ``video_fps`` resamples its frames to that rate before use (frames
    dropped or repeated by time, recorded in ``info.notes.resampled``); left out, every frame is used as it is."""

    video_fps: float | None = Field(None, gt=0, le=240, description="Resample the input video(s) to this frame "
                                                                   "rate before use; default: every frame as it is.")


class AudioFields(ParamsBase):
    """Video tasks whose model makes a sound track with the frames (the engine returns it in
    ``VideoOutput.audio``; ``"audio": false`` exports a silent video)."""

    audio: bool = Field(True, description="Keep the generated sound track; false: export a silent video.")
