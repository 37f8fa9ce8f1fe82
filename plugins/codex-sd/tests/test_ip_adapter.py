"""The request's ``reference_images`` (IP-Adapter image prompts) on sd15/sdxl: the same pixels as diffusers' own
``load_ip_adapter`` + ``set_ip_adapter_scale`` + ``ip_adapter_image`` on a fresh pipeline, the UNet as before
after the run (a run without gives the no-adapter pixels), and files that do not fit refused before loading
(exit 2, naming ``reference_images.N.<field>``).

The adapters are tiny, in the real file layout (``image_proj.*`` / ``ip_adapter.<n>.to_k_ip.weight`` as
h94/IP-Adapter ships them), built for the engines' tiny UNets; the image encoder is a tiny
CLIPVisionModelWithProjection folder. They sit in an h94/IP-Adapter-shaped folder, so the reference side is
diffusers' documented call ``load_ip_adapter(repo, subfolder="models", weight_name=...)``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import save_file

from codex_core.testing import clear_model_cache, cli_run, loaded_models, write_test_image
from codex_diffusers.testing import loaded_model, pixels, refused_run, run_json, tiny_model_dir

# DDIM with trailing spacing is what "DDIM"/"Simple" runs; plain prompts reach the pipeline as text
REQUEST = {"prompt": "a red fox", "negative_prompt": "", "seed": 3, "width": 32, "height": 32, "steps": 2, "cfg": 7.0,
           "sampler": "DDIM", "scheduler": "Simple", "prompt_syntax": "plain"}
ENCODER_PROJECTION = 24  # the tiny encoder's image embedding width (its hidden size is 32): the adapter takes 24
PIPELINES = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}


def adapter_state(unet: UNet2DConditionModel, clip_dim: int, seed: int, context_dim: int | None = None) -> dict:
    """A plain IP-Adapter for ``unet`` in h94's file layout: an image projection to 4 tokens and, per
    cross-attention in processor order, ``ip_adapter.<1, 3, 5, ...>.to_k_ip/to_v_ip.weight`` [hidden, context]."""
    generator = torch.Generator().manual_seed(seed)
    context = context_dim or unet.config.cross_attention_dim

    def normal(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    state = {"image_proj.proj.weight": normal(context * 4, clip_dim), "image_proj.proj.bias": normal(context * 4),
             "image_proj.norm.weight": 1 + normal(context), "image_proj.norm.bias": normal(context)}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.get_submodule(name.removesuffix(".processor")).to_q.in_features
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = normal(hidden, context)
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = normal(hidden, context)
        key_id += 2
    return state


def plus_adapter_state(unet: UNet2DConditionModel, encoder_hidden: int, seed: int) -> dict:
    """An IP-Adapter Plus in h94's layout: a 4-layer resampler (``latents``, ``proj_in`` from the encoder's hidden
    states, ``layers.<i>.0`` attention and ``layers.<i>.1`` feed-forward, ``proj_out``, ``norm_out``) to 4 tokens,
    and the same per-cross-attention image keys/values as a plain one."""
    generator = torch.Generator().manual_seed(seed)
    context, hidden, inner = unet.config.cross_attention_dim, 64, 256  # one head of diffusers' fixed 64 channels

    def normal(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    state = {key: value for key, value in adapter_state(unet, 8, seed).items() if key.startswith("ip_adapter.")}
    state.update({"image_proj.latents": normal(1, 4, hidden),
                  "image_proj.proj_in.weight": normal(hidden, encoder_hidden),
                  "image_proj.proj_in.bias": normal(hidden),
                  "image_proj.proj_out.weight": normal(context, hidden), "image_proj.proj_out.bias": normal(context),
                  "image_proj.norm_out.weight": 1 + normal(context),
                  "image_proj.norm_out.bias": normal(context)})
    for layer in range(4):
        prefix = f"image_proj.layers.{layer}"
        for norm in ("norm1", "norm2"):
            state.update({f"{prefix}.0.{norm}.weight": 1 + normal(hidden), f"{prefix}.0.{norm}.bias": normal(hidden)})
        state.update({f"{prefix}.0.to_q.weight": normal(hidden, hidden),
                      f"{prefix}.0.to_kv.weight": normal(2 * hidden, hidden),
                      f"{prefix}.0.to_out.weight": normal(hidden, hidden), f"{prefix}.1.0.weight": 1 + normal(hidden),
                      f"{prefix}.1.0.bias": normal(hidden), f"{prefix}.1.1.weight": normal(inner, hidden),
                      f"{prefix}.1.3.weight": normal(hidden, inner)})
    return state


def write_encoder(folder, projection_dim: int = ENCODER_PROJECTION, seed: int = 0, hidden_size: int = 32) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=hidden_size, projection_dim=projection_dim, intermediate_size=37,
                              num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """h94-shaped repos per engine (``<repo>/models/ip-adapter.safetensors`` + ``models/image_encoder``), and a
    models dir in Codex's layout (``ipadapter/``, ``clip_vision/``) holding the same files."""
    root = tmp_path_factory.mktemp("ipadapter")
    found = {}
    for engine, seed in (("sd15", 1), ("sdxl", 2)):
        unet = UNet2DConditionModel.from_pretrained(tiny_model_dir(engine), subfolder="unet")
        repo = root / f"h94-{engine}" / "models"
        repo.mkdir(parents=True)
        save_file(adapter_state(unet, ENCODER_PROJECTION, seed), repo / "ip-adapter.safetensors")
        write_encoder(repo / "image_encoder")
        found[engine] = repo
    models = root / "models"
    (models / "ipadapter").mkdir(parents=True)
    (models / "clip_vision").mkdir()
    shutil.copy(found["sd15"] / "ip-adapter.safetensors", models / "ipadapter" / "ip-adapter_tiny.safetensors")
    shutil.copytree(found["sd15"] / "image_encoder", models / "clip_vision" / "tiny-vit")
    found["models"] = models
    # an adapter with SDXL's real cross-attention width (2048), tiny otherwise: refused by sd15 from its header
    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir("sd15"), subfolder="unet")
    save_file(adapter_state(unet, ENCODER_PROJECTION, 3, context_dim=2048), root / "sdxl-width.safetensors")
    found["sdxl_width"] = root / "sdxl-width.safetensors"
    shutil.copy(found["sdxl_width"], models / "ipadapter" / "sdxl-width.safetensors")
    found["image"] = write_test_image(root / "reference.png", (48, 40), seed=7)
    found["other_image"] = write_test_image(root / "other.png", (32, 32), seed=8)
    return found


def direct(engine: str, references: list[tuple[str, str, float]]) -> np.ndarray:
    """The reference: diffusers' documented IP-Adapter call on a pipeline of its own (loading an adapter changes
    its UNet, so never the conformance suite's shared direct pipeline). ``references``: (repo, image, scale)."""
    from PIL import Image

    overrides = {"safety_checker": None, "feature_extractor": None,
                 "requires_safety_checker": False} if engine == "sd15" else {}
    pipe = PIPELINES[engine].from_pretrained(tiny_model_dir(engine), **overrides)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    arguments = {}
    if references:
        pipe.load_ip_adapter([str(repo.parent) for repo, _, _ in references], subfolder=["models"] * len(references),
                             weight_name=["ip-adapter.safetensors"] * len(references), local_files_only=True)
        pipe.set_ip_adapter_scale([scale for _, _, scale in references])
        arguments["ip_adapter_image"] = [Image.open(image).convert("RGB") for _, image, _ in references]
    image = pipe(prompt=REQUEST["prompt"], width=32, height=32, num_inference_steps=2, guidance_scale=7.0,
                 generator=torch.Generator("cpu").manual_seed(3), **arguments).images[0]
    return pixels(image)


def assert_unet_as_loaded(engine: str):
    """The UNet every cached pipeline shares has its own processors and no image projection again."""
    model = loaded_model(engine)
    unet = next(iter(model.families.values())).base.unet
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert not any(".processor." in key or "encoder_hid_proj" in key for key in unet.state_dict())
    return model


def reference(files, engine: str, scale: float, image: str = "image") -> dict:
    repo = files[engine]
    return {"image": files[image], "model": str(repo / "ip-adapter.safetensors"), "scale": scale,
            "encoder": str(repo / "image_encoder")}


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_an_image_prompt_gives_diffusers_ip_adapter_pixels_and_leaves_the_unet_as_it_was(engine, files, tmp_path):
    result = run_json(engine, "txt2img", {**REQUEST, "reference_images": [reference(files, engine, 0.7)]},
                      tmp_path / "with")
    ours = pixels(result["files"][0])
    assert np.array_equal(ours, direct(engine, [(files[engine], files["image"], 0.7)]))
    plain = direct(engine, [])
    assert not np.array_equal(ours, plain)  # the image prompt does change the output
    info = result["info"]
    adapter, encoder = info["model"]["files"]["ipadapter:0"], info["model"]["files"]["image_encoder"]
    assert adapter["path"].endswith("ip-adapter.safetensors") and len(adapter["sha256"]) == 64
    assert adapter["scale"] == 0.7
    assert encoder["folder"].endswith("image_encoder") and len(encoder["sha256"]) == 64
    assert info["inputs"]["reference_images.0.image"]["sha256"]
    assert info["notes"]["reference_images"] == {"count": 1, "unloaded_after_run": True}

    model = assert_unet_as_loaded(engine)
    # the adapter and encoder stay with the model, counted in its bytes
    assert {key[0] for key in model.ip_adapters} == {"adapters", "encoder"}
    assert model.nbytes() > sum(family.nbytes() for family in model.families.values())

    after = run_json(engine, "txt2img", REQUEST, tmp_path / "without")
    assert np.array_equal(pixels(after["files"][0]), plain)


def test_two_image_prompts_stack_as_diffusers_stacks_two_adapters(files, tmp_path):
    references = [reference(files, "sd15", 0.6), reference(files, "sd15", 1.3, "other_image")]
    result = run_json("sd15", "txt2img", {**REQUEST, "reference_images": references}, tmp_path / "two")
    expected = direct("sd15", [(files["sd15"], files["image"], 0.6), (files["sd15"], files["other_image"], 1.3)])
    assert np.array_equal(pixels(result["files"][0]), expected)


def test_names_from_the_models_folders_and_the_encoder_chosen_by_width(files, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_MODELS_DIR", str(files["models"]))
    request = {**REQUEST, "reference_images": [{"image": files["image"], "model": "ip-adapter_tiny", "scale": 0.7}]}
    result = run_json("sd15", "txt2img", request, tmp_path / "named")
    assert np.array_equal(pixels(result["files"][0]), direct("sd15", [(files["sd15"], files["image"], 0.7)]))
    encoder = result["info"]["model"]["files"]["image_encoder"]
    assert encoder["folder"] == str(files["models"] / "clip_vision" / "tiny-vit")
    listing = json.loads(cli_run(["models", "--no-hash", "--kind", "ipadapter", "--json"]).stdout)
    engines = {row["name"]: row["engines"] for row in listing}
    assert "sd15" in engines["ip-adapter_tiny"] and engines["sdxl-width"] == ["sdxl"]  # read from the headers


def refused(engine: str, request: dict, tmp_path) -> str:
    return refused_run(engine, "txt2img", {**REQUEST, **request}, tmp_path, empty_out_ok=True)


def test_files_that_do_not_fit_are_refused_before_loading(files, tmp_path, monkeypatch):
    clear_model_cache()
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "empty-models"))
    sdxl_adapter = {**reference(files, "sd15", 1.0), "model": str(files["sdxl_width"])}
    message = refused("sd15", {"reference_images": [sdxl_adapter]}, tmp_path / "a")
    assert "reference_images.0.model" in message and "2048" in message and "sdxl" in message
    # no encoder given and none in the clip_vision folders: the width it needs is named
    no_encoder = {k: v for k, v in reference(files, "sd15", 1.0).items() if k != "encoder"}
    message = refused("sd15", {"reference_images": [no_encoder]}, tmp_path / "b")
    assert "reference_images.0.encoder" in message and f"projection_dim {ENCODER_PROJECTION}" in message
    # an encoder of another width
    other = tmp_path / "wide-encoder"
    write_encoder(other, projection_dim=40)
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0), "encoder": str(other)}]},
                      tmp_path / "c")
    assert "reference_images.0.encoder" in message and "projection_dim 40" in message
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0), "encoder": "nosuch-encoder"}]},
                      tmp_path / "c2")
    assert "reference_images.0.encoder" in message and "nosuch-encoder" in message and "clip_vision" in message
    # a FaceID adapter takes face embeddings, not an encoded image
    faceid = tmp_path / "faceid.safetensors"
    save_file({"image_proj.proj.0.weight": torch.zeros(8, 4), "image_proj.norm.weight": torch.zeros(4),
               "ip_adapter.1.to_k_ip.weight": torch.zeros(4, 768),
               "ip_adapter.1.to_k_lora.down.weight": torch.zeros(1)},
              faceid)
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0), "model": str(faceid)}]},
                      tmp_path / "c3")
    assert "reference_images.0.model" in message and "FaceID" in message
    # an image that does not open
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0), "image": str(broken)}]},
                      tmp_path / "d")
    assert "reference_images.0.image" in message
    # not an IP-Adapter at all (a ControlNet-like file), a scale out of range, an unknown adapter name
    not_adapter = tmp_path / "weights.safetensors"
    save_file({"conv_in.weight": torch.zeros(1)}, not_adapter)
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0), "model": str(not_adapter)}]},
                      tmp_path / "e")
    assert "reference_images.0.model" in message and "not an IP-Adapter" in message
    message = refused("sd15", {"reference_images": [reference(files, "sd15", 2.5)]}, tmp_path / "f")
    assert "reference_images.0.scale" in message
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0), "model": "nosuch"}]},
                      tmp_path / "g")
    assert "reference_images.0.model" in message and "ipadapter" in message
    assert loaded_models("sd15") == []  # nothing was loaded for any of them


def test_an_adapter_for_another_unet_width_is_refused_when_the_model_is_known(files, tmp_path):
    """The tiny sdxl adapter (a width no released model has) on the tiny sd15: the loaded UNet's width decides."""
    message = refused("sd15", {"reference_images": [{**reference(files, "sd15", 1.0),
                                                      "model": str(files["sdxl"] / "ip-adapter.safetensors")}]},
                      tmp_path)
    assert "reference_images.0.model" in message and "cross-attention width" in message


def test_an_image_prompt_with_a_controlnet_gives_diffusers_controlnet_ip_adapter_pixels(files, tmp_path):
    """The ControlNet pipelines take ip_adapter_image too: both at once equal diffusers' ControlNet pipeline with
    the adapter loaded (and the control view's cached pipeline keeps no encoder)."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    folder = tiny_model_dir("sd15")
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(folder, subfolder="unet"))
    with torch.no_grad():  # its output convs start at zero: filled so that the control changes the image
        for name, param in controlnet.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                param.normal_(0, 0.2)
    controlnet.save_pretrained(tmp_path / "controlnet")
    control = write_test_image(tmp_path / "control.png", (32, 32), seed=4)
    request = {**REQUEST, "reference_images": [reference(files, "sd15", 0.8)],
               "controls": [{"model": str(tmp_path / "controlnet"), "image": control, "scale": 0.9}]}
    ours = pixels(run_json("sd15", "txt2img", request, tmp_path / "out")["files"][0])

    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        folder, controlnet=ControlNetModel.from_pretrained(tmp_path / "controlnet"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.load_ip_adapter(str(files["sd15"].parent), subfolder="models", weight_name="ip-adapter.safetensors",
                         local_files_only=True)
    pipe.set_ip_adapter_scale(0.8)
    expected = pipe(prompt=REQUEST["prompt"], image=Image.open(control).convert("RGB"), width=32, height=32,
                    num_inference_steps=2, guidance_scale=7.0, controlnet_conditioning_scale=0.9,
                    ip_adapter_image=Image.open(files["image"]).convert("RGB"),
                    generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(ours, pixels(expected))
    family = next(iter(loaded_model("sd15").families.values()))
    cached = family.for_class(StableDiffusionControlNetPipeline)
    assert cached.image_encoder is None and cached.feature_extractor is None and family.base.image_encoder is None


def test_an_image_prompt_on_img2img_gives_diffusers_ip_adapter_pixels(files, tmp_path):
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    init = write_test_image(tmp_path / "init.png", (32, 32), seed=5)
    request = {**REQUEST, "init_image": init, "strength": 0.8, "reference_images": [reference(files, "sd15", 0.9)]}
    del request["width"], request["height"]
    ours = pixels(run_json("sd15", "img2img", request, tmp_path / "out")["files"][0])
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_model_dir("sd15"), safety_checker=None,
                                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.load_ip_adapter(str(files["sd15"].parent), subfolder="models", weight_name="ip-adapter.safetensors",
                         local_files_only=True)
    pipe.set_ip_adapter_scale(0.9)
    expected = pipe(prompt=REQUEST["prompt"], image=Image.open(init).convert("RGB"), strength=0.8,
                    num_inference_steps=2, guidance_scale=7.0,
                    ip_adapter_image=Image.open(files["image"]).convert("RGB"),
                    generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(ours, pixels(expected))


def test_a_plus_adapter_takes_the_encoder_of_its_hidden_width(files, tmp_path, monkeypatch):
    """A plus adapter reads the encoder's hidden states: of two encoders in clip_vision, the one whose hidden_size
    it takes is chosen (the other's image embedding would fit a plain adapter), and the pixels are diffusers'."""
    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir("sd15"), subfolder="unet")
    repo = tmp_path / "h94-plus" / "models"
    repo.mkdir(parents=True)
    save_file(plus_adapter_state(unet, encoder_hidden=48, seed=5), repo / "ip-adapter.safetensors")
    write_encoder(repo / "image_encoder", projection_dim=40, seed=1, hidden_size=48)
    models = tmp_path / "models"
    (models / "ipadapter").mkdir(parents=True)
    shutil.copy(repo / "ip-adapter.safetensors", models / "ipadapter" / "ip-adapter-plus_tiny.safetensors")
    write_encoder(models / "clip_vision" / "a-projection-48", projection_dim=48, seed=2, hidden_size=32)
    shutil.copytree(repo / "image_encoder", models / "clip_vision" / "b-hidden-48")
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    request = {**REQUEST,
               "reference_images": [{"image": files["image"], "model": "ip-adapter-plus_tiny", "scale": 0.8}]}
    result = run_json("sd15", "txt2img", request, tmp_path / "out")
    assert result["info"]["model"]["files"]["image_encoder"]["folder"] == str(models / "clip_vision" / "b-hidden-48")
    assert np.array_equal(pixels(result["files"][0]), direct("sd15", [(repo, files["image"], 0.8)]))
    assert_unet_as_loaded("sd15")
