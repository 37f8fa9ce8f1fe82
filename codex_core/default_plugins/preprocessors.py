"""The core's control-image preprocessors: the ones that need no weights, and annotators that do, declared only.

Canny is OpenCV's (``cv2.Canny``, what A1111's sd-webui-controlnet and ComfyUI's canny node call), imported when
it runs; the others are Pillow operations. Their parameters and defaults are A1111's where it has them (canny's
threshold_a/b, blur_gaussian's sigma).
"""

from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core.errors import UsageError
from codex_core.hookspecs import hookimpl
from codex_core.preprocessors import Preprocessor, PreprocessorParams


class CannyParams(PreprocessorParams):
    low_threshold: int = Field(100, ge=1, le=255, description="Hysteresis low threshold (A1111's threshold_a).")
    high_threshold: int = Field(200, ge=1, le=255, description="Hysteresis high threshold (A1111's threshold_b).")

    @model_validator(mode="after")
    def _ordered(self):
        if self.low_threshold > self.high_threshold:
            raise PydanticCustomError("canny", "low_threshold {low} is above high_threshold {high}; the low one must "
                                      "not exceed the high one", {"low": self.low_threshold,
                                                                   "high": self.high_threshold})
        return self


def canny(image: Image.Image, params: CannyParams) -> Image.Image:
    """White edges on black, from the RGB image (OpenCV takes the strongest channel's gradient, as A1111 passes it)."""
    try:
        import cv2
        import numpy  # OpenCV's image type; only this preprocessor needs it, so only it imports it
    except ImportError:  # the core alone: OpenCV is the [control] extra (the diffusers kit requires it)
        raise UsageError("preprocess: canny needs OpenCV, which is not installed",
                         hint="pip install 'codex-core[control]'") from None

    edges = cv2.Canny(numpy.asarray(image), params.low_threshold, params.high_threshold)
    return Image.fromarray(edges, mode="L").convert("RGB")


def invert(image: Image.Image, params: PreprocessorParams) -> Image.Image:
    """255 - x in every channel: a black-on-white drawing becomes the white-on-black lines ControlNets read."""
    return ImageOps.invert(image)


def grayscale(image: Image.Image, params: PreprocessorParams) -> Image.Image:
    """Pillow's luma (ITU-R 601-2: L = R*299/1000 + G*587/1000 + B*114/1000), as three equal channels."""
    return image.convert("L").convert("RGB")


class BlurParams(PreprocessorParams):
    radius: float = Field(9.0, ge=0.0, le=64.0, description="Gaussian standard deviation in pixels (A1111's "
                                                              "blur_gaussian sigma); 0 leaves the image as it is.")


def blur(image: Image.Image, params: BlurParams) -> Image.Image:
    """A Gaussian blur: the soft input a tile ControlNet expects."""
    return image.filter(ImageFilter.GaussianBlur(params.radius)) if params.radius else image.copy()


class ScribbleParams(PreprocessorParams):
    threshold: int = Field(127, ge=0, le=254, description="Pixels brighter than this (in the grayscale image) are "
                                                           "lines.")
    dilate: int = Field(1, ge=0, le=16, description="Thicken each line by this many pixels in every direction "
                                                    "(a square neighbourhood).")


def scribble(image: Image.Image, params: ScribbleParams) -> Image.Image:
    """Scribble lines from an edge map (white on black, e.g. canny's output): thresholded, then dilated."""
    lines = image.convert("L").point(lambda value: 255 if value > params.threshold else 0)
    if params.dilate:
        lines = lines.filter(ImageFilter.MaxFilter(2 * params.dilate + 1))
    return lines.convert("RGB")


def _needs_an_implementation(name: str):
    def run(image: Image.Image, params: PreprocessorParams) -> Image.Image:
        raise UsageError(f"preprocess: {name}: its weights are in place, but this version of Codex does not run "
                         "the annotator yet", hint="preprocess the image elsewhere and pass the result as the "
                                                   "control image without preprocess")

    return run


# Annotators that need weights: declared with the files they read (the names in lllyasviel/Annotators, which
# A1111's sd-webui-controlnet and ComfyUI's controlnet_aux download), so a request names what is missing. These
# do not run yet; ``depth``, which runs a transformers model folder, is the diffusers kit's (its annotators module).
ANNOTATORS = {
    "openpose": ("OpenPose body, hand and face keypoints", ("body_pose_model.pth", "hand_pose_model.pth",
                                                             "facenet.pth")),
    "lineart": ("line art from a photo", ("sk_model.pth", "sk_model2.pth")),
    "hed": ("HED soft edges", ("ControlNetHED.pth",)),
}


@hookimpl
def codex_register_preprocessors(register):
    register(Preprocessor("canny", "Canny edges (OpenCV), white on black", canny, CannyParams))
    register(Preprocessor("invert", "255 - x: black lines on white become white on black", invert))
    register(Preprocessor("grayscale", "luma as three equal channels", grayscale))
    register(Preprocessor("blur", "tile/blur: a Gaussian blur", blur, BlurParams))
    register(Preprocessor("scribble", "scribble from an edge map: thresholded and dilated", scribble, ScribbleParams))
    for name, (description, needs) in ANNOTATORS.items():
        register(Preprocessor(name, f"{description} (needs annotator weights; not run by this version)",
                              _needs_an_implementation(name), needs=needs))
