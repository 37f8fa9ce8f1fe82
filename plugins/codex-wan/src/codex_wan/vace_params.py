"""Request models of the wan_vace engine (Wan 2.1 VACE on diffusers' WanVACEPipeline). Pydantic only.

One pipeline serves three tasks; what differs is the conditioning it is given:
- txt2vid: none (the pipeline feeds its VACE blocks a zero video under an all-ones mask);
- vid2vid: ``init_video`` and an optional ``mask_video`` (white: generate, black: keep). Without a mask
  the whole video is regenerated with the input as its control signal (restyle, or a pose/depth video);
  with one, only the white areas are (inpaint, or outpaint with a padded video);
- ref2vid: ``reference_images`` (a subject, an object, a background) the video is to show.

Shape rules, checked here before anything loads: width/height multiples of 16 (Wan 2.1 VAE stride 8 x
transformer patch 2; the pipeline raises on others), ``num_frames`` = 4k+1 (the VAE's temporal
stride; the pipeline would round it with a warning). A mask video must have its video's frame count and
size: the pipeline would resize a mismatched mask silently and warn about a frame mismatch only.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codex_core import INPUT_FILE, ImagePath, Params, Txt2VidParams, VideoFields, VideoPath, check_matching_videos
from codex_diffusers import CacheFields, LoraFields, NoInitImage, flow_shift_field

# A cap of ours, not the model's: each reference image adds a latent frame to every denoising step, and
# VACE's examples (its UserGuide's reference-to-video tasks) use one to three.
MAX_REFERENCE_IMAGES = 3


def _facts(value: str) -> tuple[int, int, int]:
    """(frames, width, height) of a video field's file, which its VideoPath validator has already probed (the
    probe is cached per file version: no second pass over the file)."""
    from codex_core import probe_input_video

    facts = probe_input_video(value)
    return facts.frames, facts.width, facts.height


def _conditioning_scale():
    return Field(ge=0.0, le=2.0, description="Weight of the VACE blocks' hints on the main transformer "
                                             "(diffusers' conditioning_scale, VACE's context_scale): 1.0 as "
                                             "trained, 0 ignores the video, mask and reference images.")


class _Vace(LoraFields, CacheFields):
    frame_multiple: ClassVar[int] = 4
    size_multiple: ClassVar[int] = 16
    show_after: ClassVar[dict[str, str]] = {"conditioning_scale": "cfg"}
    flow_shift: float = flow_shift_field("the diffusers VACE example uses 5.0 for 720p, 3.0 for 480p")
    conditioning_scale: float = _conditioning_scale()


class VaceTxt2Vid(NoInitImage, _Vace, Txt2VidParams):
    img2vid_hint = "wan_vace takes a video as task vid2vid (init_video) and images as task ref2vid"


class VaceVid2Vid(_Vace, VideoFields, Params):
    """The video (and mask) are resized to width x height (Lanczos, recorded in info.json notes.resized) when
    their size differs; ``num_frames`` left out is the video's own length."""

    init_video: VideoPath = Field(description="The video to inpaint, outpaint or restyle (or a control video: "
                                              "pose, depth, ...).")
    # INPUT_FILE on the optional field itself: inside the union its metadata would not reach the field (info.json
    # would not record the file's sha256, replay would not find it)
    mask_video: Annotated[VideoPath | None, INPUT_FILE] = Field(None, description="Where to generate: white areas are generated, black "
                                                           "ones kept from init_video; the same frame count and "
                                                           "size as init_video. None: all of it (restyle).")
    num_frames: int | None = Field(None, ge=1, le=1024, description="Frames to make: the first num_frames of "
                                                                    "init_video (4k+1); default: all of them.")

    @field_validator("num_frames")
    @classmethod
    def _frames_on_stride(cls, value: int | None) -> int | None:
        return None if value is None else VideoFields._frames_on_stride.__func__(cls, value)

    @model_validator(mode="after")
    def _videos_agree(self):
        check_matching_videos(self, "init_video", "mask_video")  # same frames and size, else both fields named
        video = _facts(self.init_video)
        frames, stride = video[0], self.frame_multiple
        if self.num_frames is None:
            if frames % stride != 1:
                usable = (frames - 1) // stride * stride + 1
                raise PydanticCustomError(
                    "num_frames", "init_video: its {frames} frames are not {stride}k+1; pass num_frames (at most "
                    "{usable}) to use its first frames", {"frames": frames, "stride": stride, "usable": usable})
            self.num_frames = frames  # recorded in info.json's request, so that replay asks the same
        elif self.num_frames > frames:
            raise PydanticCustomError(
                "num_frames", "num_frames: {num_frames} is more than init_video's {frames} frames",
                {"num_frames": self.num_frames, "frames": frames})
        return self


class VaceRef2Vid(NoInitImage, _Vace, Txt2VidParams):
    """Reference images go to the pipeline at their own sizes: it fits each into width x height (keeping its
    aspect ratio, on a white canvas) itself."""

    img2vid_hint = "ref2vid takes its images as reference_images"
    max_reference_images: ClassVar[int] = MAX_REFERENCE_IMAGES

    reference_images: Annotated[list[ImagePath], INPUT_FILE] = Field(
        min_length=1, description=f"What the video shows (a subject, an object, a background): 1 to "
                                  f"{MAX_REFERENCE_IMAGES} image paths.",
        json_schema_extra={"x-codex-input": "images", "maxItems": MAX_REFERENCE_IMAGES})

    @model_validator(mode="after")
    def _not_too_many(self):
        if len(self.reference_images) > self.max_reference_images:
            raise PydanticCustomError(
                "too_many_images", "reference_images: got {count} images; wan_vace takes 1 to {limit}",
                {"count": len(self.reference_images), "limit": self.max_reference_images})
        return self


VACE_TASKS = {"txt2vid": VaceTxt2Vid, "vid2vid": VaceVid2Vid, "ref2vid": VaceRef2Vid}
