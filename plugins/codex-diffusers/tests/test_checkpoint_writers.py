"""The test-data writers make the files users have: each one round-trips through diffusers' own loaders.

Every reload gets ``config=`` a copy of the tiny folder *without its weights*: a component missing
from the written file then fails to load instead of quietly coming from the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from codex_diffusers.testing.checkpoint_writers import (
    write_gguf_q8,
    write_kohya_sd_lora,
    write_peft_sd_lora,
    write_sd_single_file,
    write_wan_lora,
    write_wan_transformer_original,
)

SD_CALL = dict(prompt="a red fox", num_inference_steps=2, height=64, width=64, output_type="np")


def configs_only(folder: Path, dest: Path) -> str:
    """The folder's configs, tokenizers and scheduler, without weights: what ``config=`` needs."""
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.gguf"))
    return str(dest)


def assert_same_weights(expected: torch.nn.Module, got: torch.nn.Module, name: str) -> None:
    want, have = expected.state_dict(), got.state_dict()
    assert want.keys() == have.keys(), f"{name}: keys differ: {sorted(set(want) ^ set(have))[:5]}"
    for key, value in want.items():
        assert have[key].device.type != "meta", f"{name}.{key} was not in the file"
        assert torch.equal(value, have[key]), f"{name}.{key} differs"


def sd_images(pipe, **extra) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(**SD_CALL, **extra, generator=torch.Generator("cpu").manual_seed(0)).images


# -- tiny folders, built once per module ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("writers")


def _tiny(engine: str) -> Path:
    """The engine's tiny model of the session (built once, shared with the other tests; only read here)."""
    from codex_core.testing import tiny_model_dir

    return tiny_model_dir(engine)


@pytest.fixture(scope="module")
def sd15() -> Path:
    return _tiny("sd15")


@pytest.fixture(scope="module")
def sdxl() -> Path:
    return _tiny("sdxl")


@pytest.fixture(scope="module")
def sd15_inpaint(tiny, sd15) -> Path:
    """The SD 1.5 folder with an inpainting UNet: 9 input channels (latents, mask, masked-image latents)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel

    base = StableDiffusionPipeline.from_pretrained(sd15)
    torch.manual_seed(2)
    unet = UNet2DConditionModel.from_config({**base.unet.config, "in_channels": 9})
    pipe = StableDiffusionInpaintPipeline(**{**base.components, "unet": unet}, requires_safety_checker=False)
    pipe.save_pretrained(tiny / "sd15_inpaint", safe_serialization=True)
    return tiny / "sd15_inpaint"


@pytest.fixture(scope="module")
def wan() -> Path:
    return _tiny("wan_ti2v_5b")


@pytest.fixture(scope="module")
def sd15_plain(sd15) -> np.ndarray:
    from diffusers import StableDiffusionPipeline

    return sd_images(StableDiffusionPipeline.from_pretrained(sd15))


# -- single-file SD checkpoints -----------------------------------------------------------------------

def test_sd15_single_file_reloads_exactly(sd15, sd15_plain, tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    file = write_sd_single_file(sd15, tmp_path / "sd15.safetensors", xl=False)
    keys = load_file(file)
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(key.startswith(prefixes) for key in keys)
    for key in ("model.diffusion_model.input_blocks.0.0.weight",  # conv_in
                "model.diffusion_model.input_blocks.3.0.in_layers.0.weight",  # down_blocks.1.resnets.0.norm1
                "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.1.2.conv.weight",  # the upsampler after an attention
                "model.diffusion_model.out.2.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight",  # decoder up blocks count from the bottom
                "first_stage_model.encoder.mid.attn_1.q.weight",
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"):
        assert key in keys, key
    assert keys["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv, as in LDM checkpoints
    assert infer_diffusers_model_type(keys) == "v1"

    folder_pipe = StableDiffusionPipeline.from_pretrained(sd15)
    file_pipe = StableDiffusionPipeline.from_single_file(str(file), config=configs_only(sd15, tmp_path / "cfg"),
                                                         local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(folder_pipe, name), getattr(file_pipe, name), name)
    assert np.array_equal(sd_images(file_pipe), sd15_plain)


def test_sdxl_single_file_reloads_exactly(sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    file = write_sd_single_file(sdxl, tmp_path / "sdxl.safetensors", xl=True)
    keys = load_file(file)
    openclip = "conditioner.embedders.1.model."
    assert keys[openclip + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 48, 48)  # q, k, v fused
    assert keys[openclip + "text_projection"].shape == (48, 32)  # hidden x projection: x @ P
    for key in ("positional_embedding", "token_embedding.weight", "ln_final.weight",
                "transformer.resblocks.1.mlp.c_fc.weight", "transformer.resblocks.1.ln_2.bias"):
        assert openclip + key in keys, key
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert "model.diffusion_model.label_emb.0.0.weight" in keys  # the text_time added embedding

    folder_pipe = StableDiffusionXLPipeline.from_pretrained(sdxl)
    file_pipe = StableDiffusionXLPipeline.from_single_file(str(file), config=configs_only(sdxl, tmp_path / "cfg"),
                                                           local_files_only=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert_same_weights(getattr(folder_pipe, name), getattr(file_pipe, name), name)
    assert np.array_equal(sd_images(file_pipe), sd_images(folder_pipe))


def test_sd15_inpainting_single_file_reloads_exactly(sd15_inpaint, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    file = write_sd_single_file(sd15_inpaint, tmp_path / "inpaint.safetensors", xl=False)
    keys = load_file(file)
    assert keys["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    assert infer_diffusers_model_type(keys) == "inpainting"

    folder_pipe = StableDiffusionInpaintPipeline.from_pretrained(sd15_inpaint)
    file_pipe = StableDiffusionInpaintPipeline.from_single_file(
        str(file), config=configs_only(sd15_inpaint, tmp_path / "cfg"), local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(folder_pipe, name), getattr(file_pipe, name), name)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    inputs = dict(image=image, mask_image=mask, strength=1.0)
    assert np.array_equal(sd_images(file_pipe, **inputs), sd_images(folder_pipe, **inputs))


@pytest.mark.parametrize("layout", ["sd15", "sdxl"])
def test_the_ldm_layout_follows_the_config_not_the_tiny_models(layout, tmp_path):
    """The real block structures (SD 1.5: 3 attention down blocks then a plain one, 2 layers each;
    SDXL: plain then attention blocks with 1-3 transformer layers, linear projections), at toy width."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from codex_diffusers.testing.checkpoint_writers import _unet_to_ldm, _vae_to_ldm

    if layout == "sd15":
        unet_config = dict(down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                           up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                           block_out_channels=(8, 16, 16, 16), attention_head_dim=4)
    else:
        unet_config = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                           block_out_channels=(8, 16, 16), attention_head_dim=(2, 4, 4),
                           transformer_layers_per_block=(1, 2, 3), use_linear_projection=True,
                           addition_embed_type="text_time", addition_time_embed_dim=8,
                           projection_class_embeddings_input_dim=80)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(layers_per_block=2, cross_attention_dim=16, norm_num_groups=4, **unet_config)
    vae = AutoencoderKL(block_out_channels=[8, 8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, norm_num_groups=4)
    for name, model, convert, prefix in (("unet", unet, _unet_to_ldm, "model.diffusion_model."),
                                         ("vae", vae, _vae_to_ldm, "first_stage_model.")):
        model.save_pretrained(tmp_path / name)
        checkpoint = {prefix + key: value for key, value in convert(model.state_dict(), dict(model.config)).items()}
        reloaded = type(model).from_single_file(checkpoint, config=str(tmp_path), subfolder=name, local_files_only=True)
        assert_same_weights(model, reloaded, name)


def test_sd_writer_refuses_what_diffusers_could_not_read_back(sd15, tmp_path):
    with pytest.raises(ValueError, match="text_encoder_2"):
        write_sd_single_file(sd15, tmp_path / "x.safetensors", xl=True)
    # an LCM UNet's guidance embedding has no LDM name: diffusers' converter would drop it
    lcm = tmp_path / "lcm"
    shutil.copytree(sd15, lcm)
    unet_file = lcm / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import save_file

    save_file({**load_file(unet_file), "time_embedding.cond_proj.weight": torch.zeros(16, 8)}, str(unet_file))
    with pytest.raises(ValueError, match="time_embedding.cond_proj.weight"):
        write_sd_single_file(lcm, tmp_path / "lcm.safetensors", xl=False)
    assert not (tmp_path / "lcm.safetensors").exists()


# -- Wan: original layout and GGUF ----------------------------------------------------------------

def test_wan_original_layout_reloads_exactly(wan, tmp_path):
    from diffusers import WanTransformer3DModel

    file = write_wan_transformer_original(wan, tmp_path / "wan.safetensors")
    keys = load_file(file)
    for key in ("head.modulation", "head.head.weight", "patch_embedding.weight", "time_projection.1.weight",
                "text_embedding.0.weight", "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.o.bias",
                "blocks.0.self_attn.norm_q.weight", "blocks.1.norm3.weight", "blocks.1.ffn.2.weight",
                "blocks.1.modulation"):
        assert f"model.diffusion_model.{key}" in keys, key
    folder_model = WanTransformer3DModel.from_pretrained(wan, subfolder="transformer")
    file_model = WanTransformer3DModel.from_single_file(str(file), config=configs_only(wan, tmp_path / "cfg"),
                                                        subfolder="transformer", local_files_only=True)
    assert_same_weights(folder_model, file_model, "transformer")


def test_wan_gguf_q8_loads_and_stays_close(wan, tmp_path):
    import gguf
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel
    from diffusers.quantizers.gguf.utils import GGUFLinear

    file = write_gguf_q8(wan, tmp_path / "wan-Q8_0.gguf")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(file)).tensors}
    quantised = sorted(name for name, kind in types.items() if kind == "Q8_0")
    # the Linear weights whose input width is a multiple of 32 (the tiny Wan is 24 wide, its FFN 32)
    assert quantised == ["blocks.0.ffn.2.weight", "blocks.1.ffn.2.weight", "text_embedding.0.weight",
                         "time_embedding.0.weight"]
    assert set(types.values()) == {"Q8_0", "F32"} and "head.modulation" in types  # original keys, no prefix

    folder_model = WanTransformer3DModel.from_pretrained(wan, subfolder="transformer")
    gguf_model = WanTransformer3DModel.from_single_file(
        str(file), config=configs_only(wan, tmp_path / "cfg"), subfolder="transformer", local_files_only=True,
        quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32))
    assert isinstance(gguf_model.blocks[0].ffn.net[2], GGUFLinear)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 48, 3, 8, 8, generator=generator)
    text = torch.randn(1, 16, 32, generator=generator)
    with torch.no_grad():
        expected = folder_model(latents, torch.tensor([500]), text, return_dict=False)[0]
        got = gguf_model(latents, torch.tensor([500]), text, return_dict=False)[0]
    difference = (expected - got).abs().max().item()
    print(f"GGUF Q8_0 vs float32 transformer output: max |difference| {difference:.2e} "
          f"(output max |value| {expected.abs().max().item():.2f})")
    assert 0 < difference < 0.02 * expected.abs().max().item()


# -- LoRAs ----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")  # two adapters, on purpose
def test_kohya_and_peft_sd_loras_load_change_the_output_and_agree(sd15, sd15_plain, tmp_path):
    from diffusers import StableDiffusionPipeline

    kohya = write_kohya_sd_lora(sd15, tmp_path / "kohya.safetensors", rank=4, alpha=2.0, seed=3)
    peft = write_peft_sd_lora(sd15, tmp_path / "peft.safetensors", rank=4, alpha=2.0, seed=3)
    kohya_keys, peft_keys = load_file(kohya), load_file(peft)
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= kohya_keys.keys()
    assert kohya_keys[f"{name}.alpha"].item() == 2.0
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya_keys
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in kohya_keys
    assert {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight",
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"} <= peft_keys.keys()
    assert len(peft_keys) * 3 == len(kohya_keys) * 2  # A, B  vs  down, up, alpha for the same modules

    pipe = StableDiffusionPipeline.from_pretrained(sd15)
    pipe.load_lora_weights(str(kohya), adapter_name="kohya")
    pipe.load_lora_weights(str(peft), adapter_name="peft")
    for module in (pipe.unet, pipe.text_encoder):
        assert any("lora_A" in name for name, _ in module.named_modules())
    pipe.set_adapters(["kohya"], [1.0])
    with_kohya = sd_images(pipe)
    pipe.set_adapters(["peft"], [1.0])
    with_peft = sd_images(pipe)
    print(f"SD 1.5 LoRA: max |image difference| {np.abs(with_kohya - sd15_plain).max():.3f}; "
          f"kohya vs PEFT {np.abs(with_kohya - with_peft).max():.2e}")
    assert np.abs(with_kohya - sd15_plain).max() > 0.05  # visibly different
    np.testing.assert_allclose(with_kohya, with_peft, atol=1e-5)  # one LoRA, two layouts
    pipe.set_adapters(["kohya", "peft"], [0.0, 0.0])
    assert np.array_equal(sd_images(pipe), sd15_plain)


def test_lora_weights_depend_on_the_seed_only(sd15, tmp_path):
    first = load_file(write_kohya_sd_lora(sd15, tmp_path / "a.safetensors", seed=1, te=False))
    again = load_file(write_kohya_sd_lora(sd15, tmp_path / "b.safetensors", seed=1, te=False))
    other = load_file(write_kohya_sd_lora(sd15, tmp_path / "c.safetensors", seed=2, te=False))
    assert not any(key.startswith("lora_te_") for key in first)
    assert all(torch.equal(value, again[key]) for key, value in first.items())
    assert not all(torch.equal(value, other[key]) for key, value in first.items() if not key.endswith(".alpha"))


def test_wan_lora_loads_and_changes_the_output(wan, tmp_path):
    from diffusers import WanPipeline

    file = write_wan_lora(wan, tmp_path / "wan_lora.safetensors", rank=4, alpha=2.0)
    keys = load_file(file)
    for key in ("blocks.0.self_attn.q.lora_A.weight", "blocks.0.self_attn.q.lora_B.weight",
                "blocks.0.self_attn.q.alpha", "blocks.1.cross_attn.o.lora_A.weight", "blocks.1.ffn.0.lora_B.weight"):
        assert f"diffusion_model.{key}" in keys, key

    pipe = WanPipeline.from_pretrained(wan)
    pipe.set_progress_bar_config(disable=True)

    def frames():
        return pipe("a red fox", num_inference_steps=2, height=32, width=32, num_frames=9, output_type="np",
                    generator=torch.Generator("cpu").manual_seed(0)).frames

    plain = frames()
    pipe.load_lora_weights(str(file), adapter_name="wan")
    assert any("lora_A" in name for name, _ in pipe.transformer.named_modules())
    pipe.set_adapters(["wan"], [1.0])
    with_lora = frames()
    print(f"Wan LoRA: max |frame difference| {np.abs(with_lora - plain).max():.3f}")
    assert np.abs(with_lora - plain).max() > 0.01
    pipe.set_adapters(["wan"], [0.0])
    assert np.array_equal(frames(), plain)


def test_no_runtime_module_imports_the_writers():
    """The writers are test data under ``codex_diffusers.testing``: no plugin's runtime module imports that package,
    so an installed wheel never runs them."""
    import ast

    plugins = Path(__file__).resolve().parents[2]
    found = []
    for path in sorted(plugins.glob("*/src/**/*.py")):
        parts = path.relative_to(plugins).with_suffix("").parts[2:]  # package, subpackages, module
        if "testing" in parts:  # the testing package itself
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*parts[:len(parts) - node.level], *([node.module] if node.module else [])]) \
                    if node.level else node.module
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found += [f"{path.relative_to(plugins)}:{node.lineno}: {name}" for name in names
                      if name == "codex_diffusers.testing" or name.startswith("codex_diffusers.testing.")]
    assert list(plugins.glob("*/src/**/engines.py")), plugins  # the plugins' sources were seen
    assert not found, "\n".join(found)
