"""A1111 prompt syntax: the parser reproduces A1111's, and compel's embeddings of it fit the SD pipelines."""

from __future__ import annotations

import math

import pytest
import torch

from codex_sd.prompt_syntax import extract_loras, parse_attention, uses_weighting, weighted_embeddings

# --- parsing: A1111's own docstring examples, then the rest of the grammar --------------------------

A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]


@pytest.mark.parametrize("text, expected", A1111_EXAMPLES)
def test_parse_attention_matches_a1111_docstring(text, expected):
    assert parse_attention(text) == expected  # exact floats: the same multiplications in the same order


@pytest.mark.parametrize("text, expected", [
    ("", [("", 1.0)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
    ("((word))", [("word", 1.1 * 1.1)]),
    ("(word:1.3)", [("word", 1.3)]),
    ("(word: 1.3 )", [("word", 1.3)]),  # A1111 master allows spaces around the weight
    ("(word:-0.5)", [("word", -0.5)]),
    ("[unbalanced", [("unbalanced", 1 / 1.1)]),
    ("stray) close] and :colon", [("stray) close] and :colon", 1.0)]),
    ("back\\\\slash \\[x\\)", [("back\\slash [x)", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a, BREAK\nb", [("a,", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("BREAKFAST breaks", [("BREAKFAST breaks", 1.0)]),  # only the whole upper-case word
    ("(a:1.2) and (b:1.2)", [("a", 1.2), (" and ", 1.0), ("b", 1.2)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),  # A1111 multiplies the marker too
])
def test_parse_attention_grammar(text, expected):
    assert parse_attention(text) == expected


def test_parse_attention_rejects_a_weight_a1111_cannot_read():
    with pytest.raises(ValueError, match="1.2.3"):
        parse_attention("(word:1.2.3)")


@pytest.mark.parametrize("text, weighted", [
    ("a plain prompt, 4k", False), ("\\(literal\\)", False), ("(x:1.0)", False), ("", False),
    ("(x)", True), ("[x]", True), ("(x:0.9)", True), ("a BREAK b", True), ("(unbalanced", True),
])
def test_uses_weighting(text, weighted):
    assert uses_weighting(text) is weighted


@pytest.mark.parametrize("prompt, cleaned, loras", [
    ("a fox <lora:foxy:0.8>", "a fox ", [("foxy", 0.8)]),
    ("<lora:foxy>a fox", "a fox", [("foxy", 1.0)]),
    ("a <lyco:style_v2:-0.5>, <lora:detail:1.2:0.3> fox", "a ,  fox", [("style_v2", -0.5), ("detail", 1.2)]),
    ("x <lora:n:te=0.4:unet=0.7>", "x ", [("n", 0.7)]),
    ("x <lora:n:te=0.4>", "x ", [("n", 0.4)]),
    ("x <LoRA:n:2>", "x ", [("n", 2.0)]),
    ("x <hypernet:h:1> <lora:n:0.5> (y:1.2)", "x <hypernet:h:1>  (y:1.2)", [("n", 0.5)]),
    ("no tags <here> or <lora:>", "no tags <here> or <lora:>", []),
])
def test_extract_loras(prompt, cleaned, loras):
    assert extract_loras(prompt) == (cleaned, loras)


@pytest.mark.parametrize("prompt", ["a <lora:foxy:strong>", "a <lora:foxy:0.8x>", "a <lora::0.8>", "a <lora:foxy:nan>",
                                    "a <lora:foxy:inf>", "a <lora:foxy:100000>", "a <lora:foxy:-4.5>"])
def test_extract_loras_names_the_malformed_tag(prompt):
    tag = prompt[2:]
    with pytest.raises(ValueError, match=tag.replace("(", r"\(")):
        extract_loras(prompt)


def test_a_tag_scale_is_held_to_the_range_of_loras_scale(tmp_path):
    """`<lora:x:nan>` gave a black image without a word: a tag's scale is checked as loras[].scale is, before
    anything loads, and the error names the tag."""
    from codex_core.testing import cli_run

    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json",
                      '{"prompt": "a fox <lora:foxy:nan>"}'])
    assert result.exit_code == 2 and "LoRA tag '<lora:foxy:nan>': scale nan is outside -4 to 4" in result.stderr
    assert not any(tmp_path.iterdir())


def test_parsing_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from codex_sd.prompt_syntax import parse_attention, extract_loras, uses_weighting;"
            "parse_attention('(a:1.2)'); extract_loras('<lora:x:1>'); uses_weighting('[a]');"
            "assert 'torch' not in sys.modules and 'compel' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- embeddings on tiny SD 1.5 and SDXL pipelines ---------------------------------------------------

CALL = dict(width=32, height=32, num_inference_steps=2, guidance_scale=5.0, output_type="np")


def load(engine: str, folder):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionPipeline if engine == "sd15" else StableDiffusionXLPipeline
    pipe = cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from codex_sd.tiny import build_sd15, build_sdxl

    dirs = {"sd15": tmp_path_factory.mktemp("sd15"), "sdxl": tmp_path_factory.mktemp("sdxl")}
    build_sd15(dirs["sd15"])
    build_sdxl(dirs["sdxl"])
    return dirs


@pytest.fixture(scope="module")
def pipes(model_dirs):
    """Loaded once; tests that change a pipeline load their own."""
    return {engine: load(engine, folder) for engine, folder in model_dirs.items()}


def images(pipe, **arguments):
    return pipe(**arguments, **CALL, generator=torch.Generator("cpu").manual_seed(7)).images


def encode(pipe, prompt, negative_prompt, **extra):
    """The pipeline's own encode_prompt, as our keyword arguments."""
    out = pipe.encode_prompt(prompt, device=torch.device("cpu"), num_images_per_prompt=1,
                             do_classifier_free_guidance=True, negative_prompt=negative_prompt, **extra)
    names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    return dict(zip(names, out))


def assert_same_tensors(ours: dict, theirs: dict):
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), f"{key}: max diff {(ours[key] - theirs[key]).abs().max()}"


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
@pytest.mark.parametrize("negative", ["blurry, low quality", None])
def test_plain_prompt_gives_the_pipelines_own_images(pipes, engine, negative):
    """Compel's path on a prompt without syntax is bit-identical to the pipeline's own encoding."""
    pipe = pipes[engine]
    prompt = "a red fox, in the snow"
    assert not uses_weighting(prompt)
    ours = weighted_embeddings(pipe, prompt, negative)
    assert_same_tensors(ours, encode(pipe, prompt, negative))
    plain = images(pipe, prompt=prompt, negative_prompt=negative)
    weighted = images(pipe, **ours)
    assert plain.shape == weighted.shape == (1, 32, 32, 3)
    assert (plain == weighted).all(), f"max diff {abs(plain - weighted).max()}"


def compel_direct(pipe, text):
    """compel called on its own syntax, one Compel per text encoder (compel's CompelForSDXL recipe)."""
    from compel import Compel, ReturnedEmbeddingsType, SplitLongTextMode

    sdxl = hasattr(pipe, "text_encoder_2")
    kind = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if sdxl
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    pairs = [(pipe.tokenizer, pipe.text_encoder)] + ([(pipe.tokenizer_2, pipe.text_encoder_2)] if sdxl else [])
    compels = [Compel(tokenizer=tokenizer, text_encoder=encoder, truncate_long_prompts=False,
                      returned_embeddings_type=kind, split_long_text_mode=SplitLongTextMode.PHRASES)
               for tokenizer, encoder in pairs]
    with torch.no_grad():
        return torch.cat([compel.build_conditioning_tensor(text) for compel in compels], dim=-1)


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_a1111_weights_equal_compel_on_its_own_syntax(pipes, engine):
    pipe = pipes[engine]
    ours = weighted_embeddings(pipe, "a (fox:1.3) in [snow], ((sun))", "ugly")["prompt_embeds"]
    theirs = compel_direct(pipe, f"a (fox)1.3 in (snow){1 / 1.1!r}, (sun){1.1 * 1.1!r}")
    assert torch.equal(ours, theirs)
    plain = weighted_embeddings(pipe, "a fox in snow, sun", "ugly")["prompt_embeds"]
    assert not torch.equal(ours, plain)  # the weights did something


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_long_prompt_is_chunked_not_cut(pipes, engine):
    pipe = pipes[engine]
    prompt = ", ".join(["fox"] * 51)  # the tiny tokenizer is character-level: "fox," is 4 tokens
    tokens = len(pipe.tokenizer(prompt).input_ids) - 2
    assert tokens >= 200
    kwargs = weighted_embeddings(pipe, prompt, "blurry")
    embeds, negative = kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"]
    assert embeds.shape[1] >= 77 * math.ceil(tokens / 75) and embeds.shape[1] % 77 == 0
    assert negative.shape == embeds.shape  # padded to the same length
    # the last chunk holds prompt tokens, not padding: it differs from the empty prompt's chunk
    empty = weighted_embeddings(pipe, "", "")["prompt_embeds"]
    assert not torch.equal(embeds[:, -77:], empty)
    # and the negative's extra chunks are exactly the empty prompt's
    assert torch.equal(negative[:, 77:154], empty)
    out = images(pipe, **kwargs)
    assert out.shape == (1, 32, 32, 3) and bool(torch.isfinite(torch.from_numpy(out)).all())
    # a None negative (the empty prompt) is padded the same way
    assert weighted_embeddings(pipe, prompt, None)["prompt_embeds"].shape[1] == embeds.shape[1]


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_break_starts_a_new_chunk(pipes, engine):
    pipe = pipes[engine]
    both = weighted_embeddings(pipe, "a red fox BREAK (snow:1.2)", "blurry")
    first = weighted_embeddings(pipe, "a red fox", "blurry")
    second = weighted_embeddings(pipe, "(snow:1.2)", "blurry")
    assert both["prompt_embeds"].shape[1] == 154
    assert torch.equal(both["prompt_embeds"], torch.cat([first["prompt_embeds"], second["prompt_embeds"]], dim=1))
    if engine == "sdxl":  # pooled from the first chunk, as A1111
        assert torch.equal(both["pooled_prompt_embeds"], first["pooled_prompt_embeds"])


def test_sdxl_empty_negative_is_zeros_like_the_pipelines_own(pipes):
    pipe = pipes["sdxl"]
    assert pipe.config.force_zeros_for_empty_prompt
    theirs = encode(pipe, "a fox", None)
    assert not theirs["negative_prompt_embeds"].any() and not theirs["negative_pooled_prompt_embeds"].any()
    for negative in (None, ""):  # the engine passes "" on as None
        assert_same_tensors(weighted_embeddings(pipe, "a fox", negative), theirs)
    assert weighted_embeddings(pipe, "a fox", "blurry")["negative_prompt_embeds"].any()


def test_sdxl_empty_negative_without_force_zeros_encodes_the_empty_prompt(model_dirs):
    pipe = load("sdxl", model_dirs["sdxl"])
    pipe.register_to_config(force_zeros_for_empty_prompt=False)
    theirs = encode(pipe, "a fox", None)
    assert theirs["negative_prompt_embeds"].any()
    assert_same_tensors(weighted_embeddings(pipe, "a fox", None), theirs)


def test_sd15_empty_negative_is_the_empty_prompt(pipes):
    pipe = pipes["sd15"]
    assert_same_tensors(weighted_embeddings(pipe, "a fox", None), encode(pipe, "a fox", None))
    assert_same_tensors(weighted_embeddings(pipe, "a fox", ""), encode(pipe, "a fox", ""))


def penultimate_normalized(pipe, text):
    """What diffusers' SD clip_skip=1 computes (its own code fails on transformers 5: no ``text_model``)."""
    encoder = pipe.text_encoder
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-2]
        return getattr(encoder, "text_model", encoder).final_layer_norm(hidden)


def test_clip_skip_follows_diffusers(pipes):
    pipe = pipes["sd15"]
    skipped = weighted_embeddings(pipe, "a fox", "blurry", clip_skip=1)
    assert torch.equal(skipped["prompt_embeds"], penultimate_normalized(pipe, "a fox"))
    assert torch.equal(skipped["negative_prompt_embeds"], penultimate_normalized(pipe, "blurry"))
    assert not torch.equal(skipped["prompt_embeds"], weighted_embeddings(pipe, "a fox", "blurry")["prompt_embeds"])
    assert_same_tensors(weighted_embeddings(pipe, "a fox", "blurry", clip_skip=0),
                        weighted_embeddings(pipe, "a fox", "blurry"))
    with pytest.raises(ValueError, match="clip_skip=2.*None, 0 or 1"):
        weighted_embeddings(pipe, "a fox", "blurry", clip_skip=2)
    with pytest.raises(ValueError, match="clip_skip=1.*SDXL.*None or 0"):
        weighted_embeddings(pipes["sdxl"], "a fox", "blurry", clip_skip=1)


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_textual_inversion_tokens_are_expanded(model_dirs, engine):
    pipe = load(engine, model_dirs[engine])
    torch.manual_seed(3)
    encoders = [("tokenizer", "text_encoder")] + ([("tokenizer_2", "text_encoder_2")] if engine == "sdxl" else [])
    for tokenizer, encoder in encoders:  # a two-vector embedding: "<tok>" becomes "<tok> <tok>_1"
        width = getattr(pipe, encoder).get_input_embeddings().weight.shape[1]
        pipe.load_textual_inversion({"<tok>": torch.randn(2, width)}, token="<tok>",
                                    tokenizer=getattr(pipe, tokenizer), text_encoder=getattr(pipe, encoder))
    assert_same_tensors(weighted_embeddings(pipe, "a <tok> fox", "blurry"), encode(pipe, "a <tok> fox", "blurry"))
    weighted = weighted_embeddings(pipe, "a (<tok>:1.2) fox", "blurry")["prompt_embeds"]
    assert not torch.equal(weighted, weighted_embeddings(pipe, "a fox", "blurry")["prompt_embeds"])


def test_the_tokens_a1111_prompts_can_reach_are_bounded_before_loading():
    """A served job's --max-prompt-tokens needs an upper bound before loading: each BREAK starts a 75-token
    chunk and a long part takes as many chunks as it has characters / 75; plain syntax is cut at the window."""
    from codex_core import get_engine
    from codex_sd.params import SDTxt2Img

    def tokens(prompt, syntax="a1111", negative=""):
        params = SDTxt2Img.model_validate({"prompt": prompt, "negative_prompt": negative, "cfg": 7.0, "steps": 2,
                                           "width": 64, "height": 64, "sampler": "Euler", "prompt_syntax": syntax})
        return get_engine("sd15").prompt_tokens("txt2img", params)

    assert tokens("a red fox") == 150  # one chunk for the prompt, one for the (empty) negative prompt
    assert tokens("a red fox BREAK in snow", negative="x" * 80) == 75 * 2 + 75 * 2
    assert tokens("x " + "BREAK " * 2000) == 75 * 2001 + 75  # a 12 KB prompt of BREAKs: 150,150 tokens
    assert tokens("x " + "BREAK " * 2000, syntax="plain") is None  # the pipeline cuts it at CLIP's window
