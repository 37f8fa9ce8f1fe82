"""The request of wan_animate (Wan 2.2 Animate-14B, diffusers' WanAnimatePipeline). Only pydantic here:
`codex schema` must not import torch.

What the pipeline does with its inputs, and so what is checked here before anything loads:
- the output has exactly as many frames as ``pose_video``: the pipeline generates segments of
  ``segment_frame_length`` frames (4k+1: the Wan 2.1 VAE's temporal stride 4) overlapping by
  ``prev_segment_conditioning_frames`` (1 or 5, the only values it takes), pads the driving videos to
  whole segments (reflecting them) and cuts the result back to the pose video's length. ``num_frames``
  and ``fps`` default to the pose video's own; another ``num_frames`` is an error, not a silent cut;
- the pose video needs more frames than ``prev_segment_conditioning_frames`` (the pipeline asserts it),
  and a segment more than twice that overlap: the pipeline counts ``frames // (segment - overlap)``
  segments, one too many when the overlap is not shorter than a segment's new frames, and the extra
  one fails its own assertion after the others ran (e.g. 9-frame segments with overlap 5);
- ``face_video`` (and in replace mode ``background_video`` and ``mask_video``) is one frame per pose
  frame: a video of another length would be silently padded or cut by the pipeline, so it is an error
  naming both fields; the mask video has its background video's size;
- ``width``/``height``: multiples of 16 (VAE stride 8 x transformer patch 2; the pipeline refuses others);
- ``animate_mode``: "animate" (the character in the pose video's motion, on a blank canvas) or "replace"
  (the character put into ``background_video`` where ``mask_video`` is white). The pipeline argument is
  called ``mode``; the request field is not, because ``mode`` is codex's speed-mode field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import INPUT_FILE, ImagePath, Params, VideoFields, VideoPath
from codex_diffusers import LoraFields, flow_shift_field

MAX_SEQUENCE_LENGTH = 512  # the UMT5 window the Wan models were trained with (the pipeline's default)
PREV_SEGMENT_FRAMES = (1, 5)  # WanAnimatePipeline.check_inputs takes these only
REPLACE_VIDEOS = ("background_video", "mask_video")


def _facts(value: Any):
    """The probed facts of a video path, or None when it is not readable (its own field says why)."""
    if not isinstance(value, str):
        return None
    from codex_core import probe_input_video

    try:
        return probe_input_video(value)  # cached per file version: the field's own validator probed it already
    except ValueError:  # unreadable: the field's own check says so
        return None


class WanAnimateParams(VideoFields, Params, LoraFields):
    frame_multiple = 1  # any length: the pipeline generates whole segments and cuts back to the pose video's
    size_multiple = 16
    show_after = {"animate_mode": "prompt"}

    character_image: ImagePath = Field(description="The character to animate (the pipeline fits it into "
                                                   "width x height, keeping its aspect ratio).")
    pose_video: VideoPath = Field(description="The driving skeleton video (Wan-Animate's preprocessing output); "
                                              "the output has its frame count.")
    face_video: VideoPath = Field(description="The driving face crops, one per pose frame (resized to the "
                                              "motion encoder's square input).")
    animate_mode: Literal["animate", "replace"] = Field(
        description="animate: the character moves as in the pose video; replace: the character replaces the "
                    "person in background_video where mask_video is white.")
    # INPUT_FILE on the optional field itself: info.json hashes the file and replay finds it, as for the others
    background_video: Annotated[VideoPath | None, INPUT_FILE] = Field(
        None, description="replace mode: the scene, one frame per pose frame.")
    mask_video: Annotated[VideoPath | None, INPUT_FILE] = Field(
        None, description="replace mode: white where the character goes, black where the background stays; its "
                          "background's size.")
    num_frames: int | None = Field(None, ge=1, le=1024, description="Frames of the output: the pose video's "
                                                                    "frame count (filled in when left out).")
    fps: float | None = Field(None, gt=0, le=240, description="Frames per second of the exported video "
                                                              "(default: the pose video's).")
    segment_frame_length: int = Field(ge=5, le=1024, description="Frames generated per segment (4k+1); long "
                                                                 "videos are made segment by segment.")
    prev_segment_conditioning_frames: Literal[1, 5] = Field(
        description="Frames of the previous segment that condition the next (1 or 5: smoother, more memory).")
    flow_shift: float = flow_shift_field("the Wan authors use 5.0 for Animate-14B")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH,
                                     description="UMT5 prompt tokens (longer prompts are cut).")

    @model_validator(mode="before")
    @classmethod
    def _pose_video_decides_length_and_rate(cls, data: Any) -> Any:
        if not isinstance(data, dict) or ("num_frames" in data and "fps" in data):
            return data
        facts = _facts(data.get("pose_video"))
        if facts is None:
            return data
        data = dict(data)
        data.setdefault("num_frames", facts.frames)
        data.setdefault("fps", facts.fps)
        return data

    @model_validator(mode="after")
    def _videos_fit_the_pipeline(self):
        segment, overlap = self.segment_frame_length, self.prev_segment_conditioning_frames
        if segment % 4 != 1:
            low = (segment - 1) // 4 * 4 + 1
            raise PydanticCustomError(
                "segment_frame_length", "segment_frame_length: {value} is not 4k+1 frames (the VAE's temporal "
                "stride 4); nearest valid values: {low} or {high}", {"value": segment, "low": low, "high": low + 4})
        if segment <= 2 * overlap:  # see the module docstring
            raise PydanticCustomError(
                "segment_frame_length", "segment_frame_length: {value} must be more than twice "
                "prev_segment_conditioning_frames ({overlap}): the pipeline runs one segment too many otherwise",
                {"value": segment, "overlap": overlap})
        self._check_replace_videos()
        pose = _facts(self.pose_video)
        if pose is None:
            return self
        if self.num_frames != pose.frames:
            raise PydanticCustomError(
                "num_frames", "num_frames: {value} differs from pose_video's {frames} frames: the output has the pose "
                "video's length (leave num_frames out)", {"value": self.num_frames, "frames": pose.frames})
        if pose.frames <= overlap:
            raise PydanticCustomError(
                "pose_video", "pose_video: {frames} frame(s); it needs more than prev_segment_conditioning_frames "
                "({overlap})", {"frames": pose.frames, "overlap": overlap})
        for name in ("face_video", *REPLACE_VIDEOS):
            facts = _facts(getattr(self, name))
            if facts is not None and facts.frames != pose.frames:
                raise PydanticCustomError(
                    "video_length", "{name}: {frames} frames, but pose_video has {pose}: give one {name} frame per "
                    "pose_video frame", {"name": name, "frames": facts.frames, "pose": pose.frames})
        return self

    def _check_replace_videos(self) -> None:
        given = [name for name in REPLACE_VIDEOS if getattr(self, name) is not None]
        if self.animate_mode == "animate" and given:
            raise PydanticCustomError(
                "animate_mode", "{fields}: only used with animate_mode 'replace' (animate_mode is 'animate')",
                {"fields": " and ".join(given)})
        if self.animate_mode == "replace":
            missing = [name for name in REPLACE_VIDEOS if name not in given]
            if missing:
                raise PydanticCustomError(
                    "animate_mode", "animate_mode 'replace' needs {fields}", {"fields": " and ".join(missing)})
            background, mask = _facts(self.background_video), _facts(self.mask_video)
            if background is not None and mask is not None and background.size != mask.size:
                raise PydanticCustomError(
                    "mask_video", "mask_video: {mask}, but background_video is {background}: the mask must have its "
                    "video's size", {"mask": "{}x{}".format(*mask.size), "background": "{}x{}".format(*background.size)})


ANIMATE_TASKS = {"animate": WanAnimateParams}
