"""A1111 prompt syntax for the CLIP-conditioned SD pipelines (SD 1.x and SDXL).

Two layers:

- Parsing, pure Python (torch is never imported by it):
  ``extract_loras`` takes A1111's extra-network tags (``<lora:NAME:0.8>``, ``<lyco:...>``) out of a
  prompt; ``parse_attention`` turns A1111's attention grammar (``(word)``, ``[word]``,
  ``(word:1.3)``, escapes, ``BREAK``) into ``(text, weight)`` fragments; ``uses_weighting`` says
  whether a prompt needs anything beyond the pipeline's own plain-string encoding.
- Embeddings: ``weighted_embeddings`` encodes the parsed fragments with compel into the pipeline's
  ``prompt_embeds`` / ``negative_prompt_embeds`` (and SDXL's pooled pair) keyword arguments. Prompts
  longer than CLIP's 77-token window are encoded in 77-token chunks instead of being cut.

Weighting is compel's (each weighted token is moved away from / towards the empty prompt's
embedding; weights below 1 blend towards the prompt with that fragment masked out), not A1111's own
"multiply, then restore the mean" emphasis; the grammar and the chunking are A1111's.
"""

from __future__ import annotations

import math
import re
from typing import Any

from codex_diffusers import LORA_SCALE

__all__ = ["extract_loras", "parse_attention", "uses_weighting", "weighted_embeddings", "LORA_TAGS"]

# --- extra-network tags --------------------------------------------------------------------------

# A1111's extra-network tag (modules/extra_networks.py, re_extra_net): <KIND:ARG[:ARG...]>.
_RE_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")

# The kinds that name a LoRA (``lyco`` is the LyCORIS extension's alias, read the same way).
LORA_TAGS = ("lora", "lyco")


def extract_loras(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Remove A1111's LoRA tags from ``prompt``: ``(cleaned prompt, [(name, scale), ...])`` in prompt order.

    ``<lora:NAME:0.8>`` is NAME at 0.8, ``<lora:NAME>`` at 1.0; ``<lyco:...>`` reads the same. With
    several arguments (A1111's ``<lora:NAME:TE:UNET>``) the first positional one is the scale; an
    argument with ``=`` is one of A1111's named ones (``te=``, ``unet=``, ``dyn=``), used for the scale
    only when there is no positional one (``unet`` first, then ``te``). A tag is removed as A1111
    removes it (replaced by nothing, the text around it left as it is); tags of other kinds (e.g.
    ``<hypernet:...>``) are left in the prompt. A scale that is not a number raises ``ValueError``
    naming the tag.
    """
    loras: list[tuple[str, float]] = []

    def found(match: re.Match) -> str:
        kind, args = match.group(1), match.group(2)
        if kind.lower() not in LORA_TAGS:
            return match.group(0)
        tag = match.group(0)
        name, *items = args.split(":")
        name = name.strip()
        if not name or "=" in name:
            raise ValueError(f"LoRA tag {tag!r}: no LoRA name (expected <{kind}:NAME[:SCALE]>)")
        positional = [item for item in items if "=" not in item]
        named = dict(item.split("=", 1) for item in items if "=" in item)
        named = {key.strip(): value for key, value in named.items()}
        text = positional[0] if positional else named.get("unet", named.get("te"))
        if text is None:
            scale = 1.0
        else:
            try:
                scale = float(text.strip())
            except ValueError:
                raise ValueError(f"LoRA tag {tag!r}: scale {text.strip()!r} is not a number") from None
        low, high = LORA_SCALE  # as loras[].scale: NaN, infinities and huge scales only break the image
        if not (math.isfinite(scale) and low <= scale <= high):
            raise ValueError(f"LoRA tag {tag!r}: scale {scale:g} is outside {low:g} to {high:g} (as loras[].scale)")
        loras.append((name, scale))
        return ""

    cleaned = _RE_EXTRA_NETWORK.sub(found, prompt)
    return cleaned, loras


# --- attention grammar ---------------------------------------------------------------------------

# These reproduce A1111's parse_prompt_attention (modules/prompt_parser.py, current master, with its
# whitespace-tolerant ``(word: 1.3 )`` weight) rather than using compel's parser, because compel's
# grammar is a different syntax: there ``(word)1.3`` / ``word++`` weight a word and ``(word:1.3)`` is
# plain text.
_RE_ATTENTION = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)

_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def split_on_break(text: str) -> list[str]:
    """The parts of a prompt between A1111's ``BREAK`` words (each starts a new 75-token chunk)."""
    return re.split(_RE_BREAK, text)

_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1


def parse_attention(text: str) -> list[tuple[str, float]]:
    """A1111's attention grammar: ``[(text, weight), ...]``, A1111's algorithm step for step.

    ``(abc)`` multiplies abc's weight by 1.1, ``[abc]`` divides it by 1.1, ``(abc:1.3)`` multiplies
    it by 1.3; nesting multiplies. ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are the literal
    characters. A bracket left open applies to the rest of the prompt; a stray closing one is text.
    ``BREAK`` (the word, upper case) becomes the fragment ``("BREAK", -1.0)``: the rest of the prompt
    starts a new 77-token chunk. Runs of equal weight are merged; an empty prompt is ``[("", 1.0)]``.

    >>> parse_attention('an (important) word')
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]

    A weight A1111 cannot read either (``(a:1.2.3)``) raises ``ValueError``.
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start_position: int, multiplier: float) -> None:
        for p in range(start_position, len(res)):
            res[p][1] *= multiplier

    for m in _RE_ATTENTION.finditer(text):
        part = m.group(0)
        weight = m.group(1)

        if part.startswith("\\"):
            res.append([part[1:], 1.0])
        elif part == "(":
            round_brackets.append(len(res))
        elif part == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            try:
                value = float(weight)
            except ValueError:
                raise ValueError(f"prompt attention {part!r}: weight {weight!r} is not a number") from None
            multiply_range(round_brackets.pop(), value)
        elif part == ")" and round_brackets:
            multiply_range(round_brackets.pop(), _ROUND_MULTIPLIER)
        elif part == "]" and square_brackets:
            multiply_range(square_brackets.pop(), _SQUARE_MULTIPLIER)
        else:
            for i, piece in enumerate(re.split(_RE_BREAK, part)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([piece, 1.0])

    for pos in round_brackets:
        multiply_range(pos, _ROUND_MULTIPLIER)

    for pos in square_brackets:
        multiply_range(pos, _SQUARE_MULTIPLIER)

    if len(res) == 0:
        res = [["", 1.0]]

    # merge runs of identical weights
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return [(fragment, float(weight)) for fragment, weight in res]


def _is_break(fragment: str, weight: float) -> bool:
    # A1111 itself only honours ("BREAK", -1); inside brackets the marker's weight gets multiplied and
    # A1111 then encodes the word BREAK with a negative weight, which compel cannot express: here any
    # negatively weighted BREAK marker is a break.
    return fragment == "BREAK" and weight < 0


def uses_weighting(text: str) -> bool:
    """Whether ``text`` has any A1111 syntax that changes its encoding: a weight other than 1 or a BREAK."""
    return any(weight != 1.0 or _is_break(fragment, weight) for fragment, weight in parse_attention(text))


# --- embeddings ----------------------------------------------------------------------------------


def _segments(text: str) -> list[list[tuple[str, float]]]:
    """The parsed prompt split at BREAKs; fragments that are only whitespace (no CLIP tokens) dropped."""
    segments: list[list[tuple[str, float]]] = [[]]
    for fragment, weight in parse_attention(text):
        if _is_break(fragment, weight):
            segments.append([])
        elif fragment.strip():
            segments[-1].append((fragment, weight))
    return segments


def _conjunction(text: str):
    """A compel ``Conjunction`` of one ``FlattenedPrompt`` per BREAK-separated segment.

    Compel concatenates a conjunction's parts along the token axis, each part starting its own
    77-token chunk(s): A1111's BREAK. Built from the fragments directly, not re-serialised into
    compel's string syntax.
    """
    from compel.prompt_parser import Conjunction, FlattenedPrompt, Fragment

    prompts = []
    for segment in _segments(text):
        segment = segment or [("", 1.0)]  # compel's own empty prompt (it cannot tokenize no fragments)
        fragments = []
        for fragment, weight in segment:
            piece = Fragment(fragment, weight)
            piece.text = fragment  # Fragment() un-escapes compel's \( \) \"; ours are already plain text
            fragments.append(piece)
        prompts.append(FlattenedPrompt(fragments))
    return Conjunction(prompts)


def _pooled_text(text: str) -> str:
    """The text SDXL's pooled embedding is taken from: the first BREAK segment without the syntax.

    A1111 takes the pooled output from the prompt's first chunk, unweighted; compel's own string path
    would pool the raw string with its syntax characters in it.
    """
    return "".join(fragment for fragment, _ in _segments(text)[0])


def _embeddings_type(sdxl: bool, clip_skip: int | None):
    from compel import ReturnedEmbeddingsType

    if clip_skip is not None and (not isinstance(clip_skip, int) or isinstance(clip_skip, bool) or clip_skip < 0):
        raise ValueError(f"clip_skip must be None or an integer >= 0, not {clip_skip!r}")
    skip = clip_skip or 0
    if sdxl:
        # SDXL already conditions on the penultimate layer (diffusers' clip_skip=None / 0); compel has no
        # type for the layers before it.
        if skip == 0:
            return ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
        raise ValueError(f"clip_skip={clip_skip}: with prompt weighting SDXL supports only clip_skip None or 0 "
                         "(compel can return no layer before the penultimate one)")
    if skip == 0:
        return ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
    if skip == 1:  # diffusers' clip_skip=1 (A1111 "Clip skip: 2"): the penultimate layer, final layer norm applied
        return ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED
    raise ValueError(f"clip_skip={clip_skip}: with prompt weighting SD 1.x supports only clip_skip None, 0 or 1 "
                     "(compel can return only the last or the penultimate layer)")


def _textual_inversion_manager(pipe, tokenizer):
    """compel's ``DiffusersTextualInversionManager`` for ``tokenizer`` (it uses ``pipe.tokenizer`` itself)."""
    from compel import DiffusersTextualInversionManager

    if not hasattr(pipe, "maybe_convert_prompt"):
        return None
    if tokenizer is pipe.tokenizer:
        return DiffusersTextualInversionManager(pipe)

    class _ForTokenizer(DiffusersTextualInversionManager):
        def expand_textual_inversion_token_ids_if_necessary(self, token_ids):
            if len(token_ids) == 0:
                return token_ids
            prompt = self.pipe.maybe_convert_prompt(tokenizer.decode(token_ids), tokenizer)
            return tokenizer.encode(prompt, add_special_tokens=False)

    return _ForTokenizer(pipe)


def _fit_transformers_5(compel) -> None:
    """Make compel's PENULTIMATE_HIDDEN_STATES_NORMALIZED work on transformers 5's CLIPTextModel.

    compel 2.5 applies ``text_encoder.text_model.final_layer_norm``; transformers 5 flattened
    CLIPTextModel, whose ``final_layer_norm`` is now its own (diffusers 0.42's SD ``clip_skip`` fails on
    the same attribute). Only that one case is replaced, on this provider only, by the same computation.
    """
    from compel import ReturnedEmbeddingsType

    provider = compel.conditioning_provider
    encoder = provider.text_encoder
    if (provider.returned_embeddings_type != ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED
            or hasattr(encoder, "text_model")):
        return

    def encode(token_ids, attention_mask=None):
        output = encoder(token_ids, attention_mask, output_hidden_states=True, return_dict=True)
        return encoder.final_layer_norm(output.hidden_states[-2])

    provider._encode_token_ids_to_embeddings = encode


def weighted_embeddings(pipe, prompt: str, negative_prompt: str | None, *, clip_skip: int | None = None,
                        device=None) -> dict[str, Any]:
    """The pipeline-call keyword arguments for ``prompt`` / ``negative_prompt`` in A1111 syntax, via compel.

    ``pipe`` is a StableDiffusion*Pipeline (``prompt_embeds``, ``negative_prompt_embeds``) or a
    StableDiffusionXL*Pipeline (also ``pooled_prompt_embeds``, ``negative_pooled_prompt_embeds``).
    Pass them *instead of* ``prompt`` / ``negative_prompt`` (diffusers refuses both); take LoRA tags
    out first (``extract_loras``). Each tensor has batch size 1; the pipeline repeats it for
    ``num_images_per_prompt``.

    - Prompts over 77 tokens are split into 77-token chunks and encoded chunk by chunk (compel's PHRASES
      split: after the last ``, . ; :`` that fits, else at a word end; A1111 backtracks to a comma only
      within the last 20 tokens); prompt and negative are padded to the same number of chunks with the
      empty prompt's embedding. A BREAK starts a new chunk.
    - SDXL: both text encoders see the same prompt (no ``prompt_2``); the pooled embedding comes from
      ``text_encoder_2`` over the first BREAK segment's plain text (truncated at 77 tokens), unweighted.
      An empty negative prompt (``None`` or ``""``, which the engine passes on as None) with
      ``pipe.config.force_zeros_for_empty_prompt`` gives zero negative embeddings, as the pipeline
      itself does for ``negative_prompt=None``.
    - ``clip_skip`` means what it means to diffusers (1 = the penultimate layer, A1111's "Clip skip 2").
      What compel can express: SD 1.x None/0/1, SDXL None/0; others raise ``ValueError``.
    - Textual-inversion tokens loaded on the pipeline are expanded (compel's
      ``DiffusersTextualInversionManager``).
    - A text-encoder LoRA scale the pipeline would apply through ``cross_attention_kwargs["scale"]`` /
      ``lora_scale`` is not applied here (set adapter weights on the text encoders instead).
    """
    import torch
    from compel import Compel, SplitLongTextMode

    sdxl = hasattr(pipe, "text_encoder_2")
    embeddings_type = _embeddings_type(sdxl, clip_skip)
    if sdxl:
        encoders = [(tokenizer, encoder) for tokenizer, encoder in
                    ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
                    if encoder is not None]  # the SDXL refiner has only text_encoder_2
    else:
        encoders = [(pipe.tokenizer, pipe.text_encoder)]
    if device is None:
        device = getattr(pipe, "_execution_device", None)
    # One Compel per text encoder, as compel's own CompelForSDXL recipe does: passing lists to one
    # Compel is deprecated in compel 2.x, and its multi-encoder provider cannot pad long prompts
    # (it has no empty_z). The last SDXL encoder is the pooled one (requires_pooled=[False, True]).
    compels = [Compel(tokenizer=tokenizer, text_encoder=encoder,
                      textual_inversion_manager=_textual_inversion_manager(pipe, tokenizer),
                      truncate_long_prompts=False, returned_embeddings_type=embeddings_type,
                      requires_pooled=sdxl and index == len(encoders) - 1,
                      split_long_text_mode=SplitLongTextMode.PHRASES, device=device)
               for index, (tokenizer, encoder) in enumerate(encoders)]
    for compel in compels:
        _fit_transformers_5(compel)

    zero_negative = sdxl and not negative_prompt and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
    texts = [prompt] if zero_negative else [prompt, negative_prompt or ""]
    with torch.no_grad():
        per_encoder = []
        for compel in compels:
            tensors = [compel.build_conditioning_tensor_for_conjunction(_conjunction(text))[0] for text in texts]
            per_encoder.append(compel.pad_conditioning_tensors_to_same_length(tensors))
        length = max(tensor.shape[1] for tensors in per_encoder for tensor in tensors)
        for compel, tensors in zip(compels, per_encoder):  # text encoders whose tokenizers disagree
            for i, tensor in enumerate(tensors):
                empty = compel.conditioning_provider.empty_z.to(tensor)
                while tensor.shape[1] < length:
                    tensor = torch.cat([tensor, empty.expand(tensor.shape[0], -1, -1)], dim=1)
                tensors[i] = tensor
        embeds = [torch.cat([tensors[i] for tensors in per_encoder], dim=-1) for i in range(len(texts))]
        result = {"prompt_embeds": embeds[0],
                  "negative_prompt_embeds": torch.zeros_like(embeds[0]) if zero_negative else embeds[1]}
        if sdxl:
            provider = compels[-1].conditioning_provider
            pooled = [provider.get_pooled_embeddings([_pooled_text(text)], device=compels[-1].device)
                      for text in texts]
            result["pooled_prompt_embeds"] = pooled[0]
            result["negative_pooled_prompt_embeds"] = torch.zeros_like(pooled[0]) if zero_negative else pooled[1]
    return result
