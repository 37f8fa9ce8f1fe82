"""A1111 prompts for the CLIP-conditioned engines (SD 1.x, SDXL): an engine mixin (torch-free to import).

With ``prompt_syntax: "a1111"`` (the SD presets' default):

- a word of the prompt or negative prompt that is the name of a file in the embeddings folders
  (``EasyNegative`` for ``embeddings/EasyNegative.safetensors``, matched as typed) loads that
  textual-inversion embedding for the run (``embeddings.embeddings_for_run``), as A1111 does;
- ``<lora:NAME:0.8>`` tags are taken out of the prompt and load the LoRA called NAME from the
  loras folders for the run, as if it were in ``loras`` (an unknown name is an error before
  anything loads); ``info.notes.prompt_loras`` records what the tags meant;
- weights ``(word:1.2)``, ``(word)``, ``[word]``, ``BREAK``, prompts past the 75-token window and
  ``clip_skip`` 2 are encoded through compel (``prompt_syntax.weighted_embeddings``) into the
  pipeline's ``prompt_embeds``. A prompt without any of these is passed as text: compel would
  give the same embeddings bit for bit (tests/test_prompt_syntax.py), the plain path skips it.

``clip_skip`` is A1111's count (1 = last layer); diffusers' own ``clip_skip`` argument is not used:
under transformers 5 it fails for SD 1.x, so a skip goes through compel as well.
"""

from __future__ import annotations

import math
import re
import time
from contextlib import AbstractContextManager, ExitStack
from typing import Any, ClassVar

from codex_core import Job, ParamsBase, UsageError

CHUNK = 75  # the tokens of one CLIP window, without its start and end tokens


class A1111Prompts:
    """Engine mixin: A1111 prompt tags, weights, long prompts and clip skip. Put it before DiffusersEngine."""

    clip_skip_max: ClassVar[int] = 2

    def check_request(self, task: str, params: ParamsBase, variant: str | None) -> list[str]:
        problems = list(super().check_request(task, params, variant))
        if getattr(params, "clip_skip", 1) > self.clip_skip_max:
            problems.append(f"clip_skip: got {params.clip_skip}: engine {self.key} takes 1"
                            + (f" to {self.clip_skip_max}" if self.clip_skip_max > 1 else
                               " (its conditioning already uses the penultimate CLIP layer)"))
        if getattr(params, "prompt_syntax", "plain") == "a1111":
            problems += [problem for _, _, problem in self._prompt_loras(params) if problem]
        return problems

    def file_problem(self, kind: str, path) -> str | None:
        """An embedding fits when its vectors are as wide as the text conditioning: one tensor (SD 1.x/2.x) or
        ``clip_l`` + ``clip_g`` (SDXL), whose widths add up to it (the LoRA context widths: 768, 1024, 2048)."""
        if kind != "embeddings":
            return super().file_problem(kind, path)
        if path.suffix.lower() != ".safetensors":
            return None  # a pickle embedding is never opened to look (a run loads it with --allow-pickle)
        from codex_core import read_safetensors_header, tensor_shapes

        shapes = tensor_shapes(read_safetensors_header(path, "embedding"))
        if "clip_l" in shapes or "clip_g" in shapes:
            tensors = [shapes[key] for key in ("clip_l", "clip_g") if key in shapes]
        elif "emb_params" in shapes:
            tensors = [shapes["emb_params"]]
        else:  # another trainer's name for the one tensor
            tensors = list(shapes.values()) if len(shapes) == 1 else []
        width = sum(shape[-1] for shape in tensors if shape)
        if not tensors or width not in self.lora_context_dims:
            return (f"its vectors are {width or 'not'} wide; engine {self.key} takes embeddings "
                    f"{' or '.join(map(str, self.lora_context_dims))} wide")
        return None

    def prompt_tokens(self, task: str, params: ParamsBase) -> int | None:
        """With A1111 syntax a prompt is not cut at CLIP's window: each BREAK starts another 75-token chunk and
        a long text takes as many chunks as it needs. A CLIP token covers at least one character, so each
        BREAK-separated part of a prompt takes at most ceil(characters / 75) chunks of 75 tokens."""
        if getattr(params, "prompt_syntax", "plain") != "a1111":
            return None  # cut at the encoder's window by the pipeline
        from .prompt_syntax import split_on_break

        return sum(CHUNK * max(1, math.ceil(len(part) / CHUNK))
                   for text in (params.prompt, getattr(params, "negative_prompt", "") or "")
                   for part in split_on_break(text))

    def _prompt_loras(self, params) -> list[tuple[str, Any, str | None]]:
        """(tag, LoRA file or None, problem or None) for each <lora:...> tag of the prompt."""
        from codex_core import find_model_file, read_safetensors_header

        from .prompt_syntax import extract_loras

        try:
            _, tags = extract_loras(params.prompt)
        except ValueError as exc:
            return [("", None, f"prompt: {exc}")]
        found = []
        for name, scale in tags:
            tag = f"<lora:{name}:{scale:g}>"
            try:
                path = find_model_file("loras", name, tag).path
                if path.suffix.lower() == ".safetensors":
                    read_safetensors_header(path, tag)  # a damaged header is refused with the request, not loaded
                found.append((tag, (path, name, scale), None))
            except UsageError as exc:
                found.append((tag, None, f"prompt: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")))
        return found

    def run_loras(self, job: Job) -> list:
        loras = super().run_loras(job)
        if getattr(job.params, "prompt_syntax", "plain") != "a1111":
            return loras
        from codex_core import file_record

        from codex_diffusers.lora import RunLora

        for tag, (path, name, scale), _ in self._prompt_loras(job.params):
            loras.append(RunLora(f"prompt {tag}", path, scale))
            job.files[f"lora:{name}"] = {**file_record(path, job.progress.message), "scale": scale}
            job.notes.setdefault("prompt_loras", []).append({"tag": tag, "name": name, "scale": scale,
                                                             "path": str(path)})
        return loras

    def _prompt_embeddings(self, params) -> list[tuple[str, Any]]:
        """(name, file) of each embedding in the embeddings folders whose name is a word of the prompts."""
        from codex_core import scan_model_files

        texts = [params.prompt, getattr(params, "negative_prompt", None) or ""]
        found: dict[str, Any] = {}
        for candidate in scan_model_files(["embeddings"]):
            name = candidate.stem
            if candidate.path.is_dir() or name in found:
                continue
            word = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
            if any(word.search(text) for text in texts):
                found[name] = candidate.path
        return list(found.items())

    def run_context(self, pipe, job: Job) -> AbstractContextManager:
        outer = super().run_context(pipe, job)
        embeddings = self._prompt_embeddings(job.params) if getattr(job.params, "prompt_syntax", "") == "a1111" else []
        if not embeddings:
            return outer
        from codex_core import file_record

        from .embeddings import embeddings_for_run

        for name, path in embeddings:
            job.files[f"embedding:{name}"] = file_record(path, job.progress.message)
        job.notes["embeddings"] = [name for name, _ in embeddings]
        stack = ExitStack()
        try:
            stack.enter_context(outer)
            stack.enter_context(embeddings_for_run(pipe, embeddings, job.runtime.allow_pickle))
        except BaseException:
            stack.close()
            raise
        return stack

    def pipeline_arguments(self, job: Job, pipe) -> dict[str, Any]:
        arguments = super().pipeline_arguments(job, pipe)
        params = job.params
        if getattr(params, "prompt_syntax", "plain") != "a1111":
            return arguments
        from .prompt_syntax import extract_loras, uses_weighting

        prompt, _ = extract_loras(params.prompt)
        negative = arguments.get("negative_prompt")
        window = pipe.tokenizer.model_max_length - 2  # CLIP's 77 minus the start and end tokens
        long = any(text and len(pipe.tokenizer(text).input_ids) - 2 > window for text in (prompt, negative))
        if not (long or params.clip_skip > 1 or uses_weighting(prompt) or (negative and uses_weighting(negative))):
            arguments["prompt"] = prompt
            return arguments
        from .prompt_syntax import weighted_embeddings

        job.progress.stage("encode")  # here, before the call: the pipeline then gets the embeddings
        started = time.perf_counter()
        embeds = weighted_embeddings(pipe, prompt, negative, clip_skip=params.clip_skip - 1 or None)
        job.timer.add("text_encode", time.perf_counter() - started)
        arguments.pop("prompt", None)
        arguments.pop("negative_prompt", None)
        arguments.update(embeds)
        job.notes["prompt_encoding"] = {"syntax": "a1111", "via": "compel", "long": long, "clip_skip": params.clip_skip,
                                        "tokens": int(embeds["prompt_embeds"].shape[1])}
        return arguments
