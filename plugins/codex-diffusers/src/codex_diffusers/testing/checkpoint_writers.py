"""Test-data writers: the files users have, made from tiny diffusers-format model folders.

Users bring single-file checkpoints (A1111 / original LDM layout), original-layout Wan weights, GGUF
quantised transformers and LoRAs in kohya, PEFT and Wan layouts. diffusers ships only the
original -> diffusers converters (``diffusers.loaders.single_file_utils``,
``diffusers.loaders.lora_conversion_utils``), so to test that our loading code handles such files
these writers do the inverse: they read a tiny model folder and write the file a user would have.
Each layout is exactly what diffusers' own converter reads back; the kit's
``tests/test_checkpoint_writers.py`` prove it by a round trip through diffusers. Test data only: it
lives under ``codex_diffusers.testing`` and no runtime module imports it.

The converters are driven by the folder's configs and keys (``layers_per_block``, which blocks have
attention, which layers are ``nn.Linear``), never by the full-size models' widths, so they work at
any size. Imports torch, safetensors and diffusers: the kit's torch-free modules must not import it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

__all__ = ["write_sd_single_file", "write_wan_transformer_original", "write_gguf_q8", "write_kohya_sd_lora",
           "write_peft_sd_lora", "write_wan_lora"]

# The key prefixes of an A1111 / original Stable Diffusion checkpoint (the LDM and SGM module trees).
LDM_UNET = "model.diffusion_model."
LDM_VAE = "first_stage_model."
SD15_CLIP = "cond_stage_model.transformer."
SDXL_CLIP = "conditioner.embedders.0.transformer."  # CLIP ViT-L, in transformers' layout
SDXL_OPEN_CLIP = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG, in open_clip's layout
WAN_ORIGINAL = "model.diffusion_model."  # how ComfyUI / Wan-AI single files prefix the transformer
WAN_LORA = "diffusion_model."  # how original-layout Wan LoRAs prefix their keys


# -- reading a diffusers folder ------------------------------------------------------------------

def _read_component(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A component's state dict (as stored, all shards) and its config.json."""
    sub = Path(folder) / name
    config = json.loads((sub / "config.json").read_text())
    index = sorted(sub.glob("*.safetensors.index.json"))
    if index:
        files = sorted({sub / shard for shard in json.loads(index[0].read_text())["weight_map"].values()})
    else:  # one file; skip variants such as diffusion_pytorch_model.fp16.safetensors
        files = [path for path in sorted(sub.glob("*.safetensors")) if path.name.count(".") == 1]
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {sub}")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(path))
    return state, config


def _save(tensors: dict[str, torch.Tensor], dest: Path) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses views and tensors that share storage
    save_file({key: value.detach().contiguous().clone() for key, value in tensors.items()}, str(dest),
              metadata={"format": "pt"})
    return dest


def _unmapped(what: str, keys: list[str]) -> ValueError:
    shown = ", ".join(sorted(keys)[:8]) + (" ..." if len(keys) > 8 else "")
    return ValueError(f"{what}: no original-layout name for {len(keys)} key(s), so diffusers could not read "
                      f"them back: {shown}")


def _replace_prefix(name: str, table: dict[str, str]) -> str | None:
    """``name`` with the first of ``table``'s prefixes it starts with replaced (None: it starts with none)."""
    return next((new + name[len(old):] for old, new in table.items() if name.startswith(old)), None)


# -- SD UNet: diffusers -> LDM (inverse of convert_ldm_unet_checkpoint) ---------------------------

# Inside a resnet; the attention blocks (Transformer2DModel / SpatialTransformer) keep their names.
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}


def _unet_prefixes(state: dict, config: dict) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix, laid out as convert_ldm_unet_checkpoint reads it.

    LDM numbers the UNet's layers flat: ``input_blocks.0`` is conv_in, then each down block takes
    ``layers_per_block + 1`` slots (one per resnet, its attention as sub-module ``.1``, and one for
    the downsampler); ``output_blocks`` likewise with ``layers_per_block + 1`` resnets per up block
    and the upsampler after the last resnet's attention (sub-module ``.2``) or after the resnet
    (``.1``) when the block has none. The middle block is resnet, attention, resnet.
    """
    per_block = config["layers_per_block"]
    if not isinstance(per_block, int):
        raise ValueError("layers_per_block differs per block: diffusers' LDM converter takes one number")
    slots = per_block + 1
    prefixes = {}
    for block in range(len(config["down_block_types"])):
        for layer in range(per_block):
            index = 1 + block * slots + layer
            prefixes[f"down_blocks.{block}.resnets.{layer}."] = f"input_blocks.{index}.0."
            prefixes[f"down_blocks.{block}.attentions.{layer}."] = f"input_blocks.{index}.1."
        prefixes[f"down_blocks.{block}.downsamplers.0.conv."] = f"input_blocks.{1 + block * slots + per_block}.0.op."
    prefixes.update({"mid_block.resnets.0.": "middle_block.0.", "mid_block.attentions.0.": "middle_block.1.",
                     "mid_block.resnets.1.": "middle_block.2."})
    for block in range(len(config["up_block_types"])):
        for layer in range(slots):
            index = block * slots + layer
            prefixes[f"up_blocks.{block}.resnets.{layer}."] = f"output_blocks.{index}.0."
            prefixes[f"up_blocks.{block}.attentions.{layer}."] = f"output_blocks.{index}.1."
        has_attention = any(key.startswith(f"up_blocks.{block}.attentions.") for key in state)
        last = block * slots + per_block
        prefixes[f"up_blocks.{block}.upsamplers.0.conv."] = f"output_blocks.{last}.{2 if has_attention else 1}.conv."
    return prefixes


def _unet_to_ldm(state: dict, config: dict) -> dict[str, torch.Tensor]:
    top = dict(_UNET_TOP)
    # SDXL's added time/text embedding and class embeddings share LDM's label_emb (as diffusers reads them)
    if config.get("addition_embed_type") == "text_time":
        top.update({"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2."})
    if config.get("class_embed_type") in ("timestep", "projection"):
        top.update({"class_embedding.linear_1.": "label_emb.0.0.", "class_embedding.linear_2.": "label_emb.0.2."})
    if config.get("num_class_embeds") is not None:
        top["class_embedding.weight"] = "label_emb.weight"
    table = {**top, **_unet_prefixes(state, config)}
    out, missing = {}, []
    for key, value in state.items():
        ours = next((prefix for prefix in table if key.startswith(prefix)), None)
        if ours is None:
            missing.append(key)
            continue
        rest = key[len(ours):]
        if ".resnets." in ours:  # resnets have LDM layer names of their own
            first, _, tail = rest.partition(".")
            rest = f"{_UNET_RESNET.get(first, first)}.{tail}"
        out[table[ours] + rest] = value
    if missing:  # e.g. an LCM UNet's time_embedding.cond_proj: the LDM converter drops it
        raise _unmapped("UNet", missing)
    return out



# -- SD ControlNet: diffusers -> lllyasviel's layout (inverse of convert_controlnet_checkpoint) ----------


def write_controlnet_single_file(folder: Path, dest: Path, *, original: bool = True) -> Path:
    """A diffusers ControlNet folder as the one file A1111's models/ControlNet holds: lllyasviel's layout
    (``control_model.`` + the UNet encoder's LDM names, ``input_hint_block.{0,2,..,14}``, ``zero_convs.N.0``,
    ``middle_block_out.0``), or (``original=False``) diffusers' own keys in one file."""
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    state = load_file(str(Path(folder) / "diffusion_pytorch_model.safetensors"))
    if not original:
        return _save(state, dest)
    blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    hint = {"controlnet_cond_embedding.conv_in.": "input_hint_block.0.",
            "controlnet_cond_embedding.conv_out.": f"input_hint_block.{2 * (blocks + 1)}.",
            **{f"controlnet_cond_embedding.blocks.{index}.": f"input_hint_block.{2 * (index + 1)}."
               for index in range(blocks)}}
    out, encoder = {}, {}
    for key, value in state.items():
        if key.startswith("controlnet_down_blocks."):
            index, _, rest = key.removeprefix("controlnet_down_blocks.").partition(".")
            out[f"zero_convs.{index}.0.{rest}"] = value
        elif key.startswith("controlnet_mid_block."):
            out[f"middle_block_out.0.{key.removeprefix('controlnet_mid_block.')}"] = value
        elif key.startswith("controlnet_cond_embedding."):
            prefix = next(prefix for prefix in hint if key.startswith(prefix))
            out[hint[prefix] + key[len(prefix):]] = value
        else:  # the UNet encoder it copies: the UNet's LDM names (no up blocks)
            encoder[key] = value
    out.update(_unet_to_ldm(encoder, {**config, "up_block_types": []}))
    return _save({f"control_model.{key}": value for key, value in out.items()}, dest)

# -- SD VAE: diffusers -> LDM (inverse of convert_ldm_vae_checkpoint) -----------------------------

_VAE_TOP = {"conv_in.": "conv_in.", "conv_out.": "conv_out.", "conv_norm_out.": "norm_out."}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_to_ldm(state: dict, config: dict) -> dict[str, torch.Tensor]:
    """Encoder and decoder blocks keep their order in diffusers but LDM numbers the decoder's up blocks
    from the bottom (``decoder.up.{n-1-i}``); resnets are ``block.N`` (``nin_shortcut``), the mid
    block ``block_1`` / ``attn_1`` / ``block_2``, and the mid attention's projections are 1x1 convs."""
    up_blocks = len(config["up_block_types"])
    out, missing = {}, []
    for key, value in state.items():
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            out[key] = value
            continue
        side, _, rest = key.partition(".")  # encoder / decoder
        new = None
        if side in ("encoder", "decoder"):
            new = _replace_prefix(rest, _VAE_TOP)
            match = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
            if match:
                kind, block, part, index, tail = match.groups()
                block = int(block) if kind == "down" else up_blocks - 1 - int(block)
                if part == "resnets":
                    new = f"{kind}.{block}.block.{index}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
                else:
                    new = f"{kind}.{block}.{kind}sample.{tail}"  # downsample.conv / upsample.conv
            match = re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest)
            if match:
                new = f"mid.block_{int(match.group(1)) + 1}.{match.group(2)}"
            match = re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", rest)
            if match:
                new = f"mid.attn_1.{_VAE_ATTENTION[match.group(1)]}.{match.group(2)}"
                if value.ndim == 2:  # a Linear in diffusers, a 1x1 Conv2d in LDM checkpoints
                    value = value[:, :, None, None]
        if new is None:
            missing.append(key)
        else:
            out[f"{side}.{new}"] = value
    if missing:
        raise _unmapped("VAE", missing)
    return out


# -- CLIP text encoders -------------------------------------------------------------------------

def _with_text_model(state: dict) -> dict[str, torch.Tensor]:
    """transformers >= 5.6 saves ``CLIPTextModel`` without the ``text_model.`` level; checkpoints have it."""
    return {key if key.startswith(("text_model.", "text_projection")) else f"text_model.{key}": value
            for key, value in state.items()}


def _clip_to_a1111(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    """CLIP ViT-L stays in transformers' layout under ``prefix`` (``...transformer.text_model.*``)."""
    return {prefix + key: value for key, value in _with_text_model(state).items()}


_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                    "self_attn.out_proj": "attn.out_proj"}
_OPEN_CLIP_TOP = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                  "text_model.embeddings.position_embedding.weight": "positional_embedding",
                  "text_model.final_layer_norm.weight": "ln_final.weight",
                  "text_model.final_layer_norm.bias": "ln_final.bias"}


def _clip_to_open_clip(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    """A ``CLIPTextModelWithProjection`` in open_clip's layout (inverse of convert_open_clip_checkpoint):
    resblocks with one fused ``attn.in_proj_weight`` (q, k, v stacked), a ``text_projection`` matrix
    applied as ``x @ P`` (the transposed Linear weight), ``positional_embedding`` without ``.weight``."""
    state = _with_text_model(state)
    out, missing = {}, []
    for key, value in state.items():
        match = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        layer, module, kind = match.groups() if match else (None, None, None)
        if key in _OPEN_CLIP_TOP:
            out[prefix + _OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T
        elif module in _OPEN_CLIP_LAYER:
            out[f"{prefix}transformer.resblocks.{layer}.{_OPEN_CLIP_LAYER[module]}.{kind}"] = value
        elif module == "self_attn.q_proj":  # k_proj and v_proj join it in the one fused projection
            fused = [state[f"text_model.encoder.layers.{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat(fused)
        elif module not in ("self_attn.k_proj", "self_attn.v_proj"):
            missing.append(key)
    if missing:
        raise _unmapped("OpenCLIP text encoder", missing)
    return out


def write_sd_single_file(folder: Path, dest: Path, *, xl: bool) -> Path:
    """One A1111 / original-layout ``.safetensors`` from a diffusers SD 1.x (``xl=False``) or SDXL
    (``xl=True``) pipeline folder: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE)
    and the text encoders (SD 1.x ``cond_stage_model.transformer.text_model.*``; SDXL
    ``conditioner.embedders.0.transformer.text_model.*`` and ``conditioner.embedders.1.model.*`` in
    open_clip layout). Tensors keep their stored dtype, so a reload is exact. Works for inpainting
    UNets (9 input channels) too. Reload with ``from_single_file(dest, config=folder)``."""
    folder = Path(folder)
    if xl != (folder / "text_encoder_2").is_dir():
        raise ValueError(f"{folder}: xl={xl} but the folder {'lacks' if xl else 'has'} a text_encoder_2")
    unet, unet_config = _read_component(folder, "unet")
    vae, vae_config = _read_component(folder, "vae")
    text_encoder, _ = _read_component(folder, "text_encoder")
    out = {LDM_UNET + key: value for key, value in _unet_to_ldm(unet, unet_config).items()}
    out.update({LDM_VAE + key: value for key, value in _vae_to_ldm(vae, vae_config).items()})
    if xl:
        # diffusers tells the two encoders apart by width (CLIP-L 768, bigG 1280): equal widths cannot load
        out.update(_clip_to_a1111(text_encoder, SDXL_CLIP))
        out.update(_clip_to_open_clip(_read_component(folder, "text_encoder_2")[0], SDXL_OPEN_CLIP))
    else:
        out.update(_clip_to_a1111(text_encoder, SD15_CLIP))
    return _save(out, dest)


# -- Wan transformer: diffusers -> original (inverse of convert_wan_transformer_to_diffusers) -----

_WAN_TOP = {"scale_shift_table": "head.modulation", "proj_out.": "head.head.", "patch_embedding.": "patch_embedding.",
            "vace_patch_embedding.": "vace_patch_embedding.",  # VACE: the conditioning's patch embedding
            "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
            "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
            "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
            "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
            "condition_embedder.time_proj.": "time_projection.1.",
            # the I2V 14B models' CLIP image embedder
            "condition_embedder.image_embedder.norm1.": "img_emb.proj.0.",
            "condition_embedder.image_embedder.ff.net.0.proj.": "img_emb.proj.1.",
            "condition_embedder.image_embedder.ff.net.2.": "img_emb.proj.3.",
            "condition_embedder.image_embedder.norm2.": "img_emb.proj.4."}
# inside blocks.N: Wan's norm3 (before cross-attention) is diffusers' norm2 and the other way round
_WAN_BLOCK = {"attn1.": "self_attn.", "attn2.": "cross_attn.", "ffn.net.0.proj.": "ffn.0.", "ffn.net.2.": "ffn.2.",
              "norm2.": "norm3.", "norm3.": "norm2.", "norm1.": "norm1.", "scale_shift_table": "modulation",
              # VACE context blocks (vace_blocks.N): their input and hint projections
              "proj_in.": "before_proj.", "proj_out.": "after_proj."}
_WAN_ATTENTION = {"to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "o.", "norm_q.": "norm_q.",
                  "norm_k.": "norm_k.", "add_k_proj.": "k_img.", "add_v_proj.": "v_img.",
                  "norm_added_k.": "norm_k_img."}


def _wan_original_key(key: str) -> str | None:
    """The Wan-AI name of a diffusers ``WanTransformer3DModel`` (or ``WanVACETransformer3DModel``) key (None: the
    converter has none)."""
    match = re.match(r"((?:vace_)?blocks\.\d+\.)(attn[12]\.)?(.*)", key)
    if not match:
        return _replace_prefix(key, _WAN_TOP)
    block, attention, rest = match.groups()
    if attention:
        rest = _replace_prefix(rest, _WAN_ATTENTION)
        return rest and block + _WAN_BLOCK[attention] + rest
    rest = _replace_prefix(rest, _WAN_BLOCK)
    return rest and block + rest


def _wan_to_original(state: dict) -> dict[str, torch.Tensor]:
    out, missing = {}, []
    for key, value in state.items():
        new = _wan_original_key(key)
        if new is None:
            missing.append(key)
        else:
            out[new] = value
    if missing:
        raise _unmapped("Wan transformer", missing)
    return out


def write_wan_transformer_original(folder: Path, dest: Path, subfolder: str = "transformer") -> Path:
    """A Wan transformer as a Wan-AI / ComfyUI single file: original key names, ``model.diffusion_model.``
    prefix. Reload with ``WanTransformer3DModel.from_single_file(dest, config=folder, subfolder=...)``."""
    state, _ = _read_component(folder, subfolder)
    return _save({WAN_ORIGINAL + key: value for key, value in _wan_to_original(state).items()}, dest)


# -- GGUF ---------------------------------------------------------------------------------------

def _linear_weights(config: dict) -> set[str]:
    """Names of the ``nn.Linear`` weights of the model a diffusers config describes (built on meta)."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = getattr(diffusers, config["_class_name"]).from_config(config)
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def write_gguf_q8(folder: Path, dest: Path, subfolder: str = "transformer") -> Path:
    """A transformer as GGUF (the city96 kind): ``nn.Linear`` weights whose input width is a multiple
    of 32 (the Q8_0 block) quantised Q8_0, everything else F32.

    Only Linear weights: diffusers' GGUF loader swaps just ``nn.Linear`` layers for dequantising
    ones, so a quantised conv, norm or modulation table would be used raw. Wan keys are written in
    the original layout without prefix (as the published Wan GGUFs); other models keep diffusers
    keys, which the loader takes as they are. Reload with ``from_single_file(dest, config=folder,
    subfolder=..., quantization_config=GGUFQuantizationConfig(...))``.
    """
    import gguf
    from gguf.quants import quantize

    state, config = _read_component(folder, subfolder)
    quantisable = _linear_weights(config)
    is_wan = config["_class_name"] == "WanTransformer3DModel"
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dest), arch="wan" if is_wan else config["_class_name"])
    q8 = gguf.GGMLQuantizationType.Q8_0
    block = gguf.GGML_QUANT_SIZES[q8][0]
    for key, value in state.items():
        name = _wan_original_key(key) if is_wan else key
        if name is None:
            raise _unmapped("Wan transformer", [key])
        array = value.detach().float().numpy()
        if key in quantisable and array.shape[-1] % block == 0:
            writer.add_tensor(name, quantize(array, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


# -- LoRAs --------------------------------------------------------------------------------------

_UNET_LORA = re.compile(r"\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$")
_TE_LORA = re.compile(r"^text_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.weight$")
_WAN_LORA = re.compile(r"^blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0|add_k_proj|add_v_proj)"
                       r"|ffn\.net\.(0\.proj|2))\.weight$")


def _random_lora(targets: dict, rank: int, seed: int) -> dict:
    """target -> (down [rank, in], up [out, rank]) drawn in the targets' order from one seeded generator.

    Scaled so that up @ down has entries about as large as a freshly initialised Linear's weights:
    enough to change a tiny model's output visibly without blowing it up. (A trained-from-scratch
    LoRA starts with up = 0 and would change nothing.)"""
    generator = torch.Generator().manual_seed(seed)
    pairs = {}
    for target, (out_features, in_features) in targets.items():
        down = torch.randn(rank, in_features, generator=generator) / in_features ** 0.5
        up = torch.randn(out_features, rank, generator=generator) / rank ** 0.5
        pairs[target] = (down, up)
    return pairs


def _sd_lora_targets(folder: Path, te: bool) -> dict:
    """(component, module) -> weight shape: the UNet's attention projections and, with ``te``, the text
    encoder's (module names with ``text_model.``, as LoRA files have them)."""
    if (Path(folder) / "text_encoder_2").is_dir():
        raise ValueError(f"{folder} is an SDXL folder: these LoRA writers write SD 1.x layouts")
    unet, _ = _read_component(folder, "unet")
    targets = {("unet", key[:-len(".weight")]): tuple(value.shape) for key, value in unet.items()
               if _UNET_LORA.search(key)}
    if te:
        text_encoder = _with_text_model(_read_component(folder, "text_encoder")[0])
        targets.update({("text_encoder", key[:-len(".weight")]): tuple(value.shape)
                        for key, value in text_encoder.items() if _TE_LORA.match(key)})
    return targets


def write_kohya_sd_lora(folder: Path, dest: Path, *, rank: int = 4, alpha: float | None = None, seed: int = 0,
                        te: bool = True) -> Path:
    """A random LoRA for an SD 1.x folder in kohya / A1111 layout: ``lora_unet_<module with _>`` and
    ``lora_te_text_model_<...>`` with ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``
    (the layer adds ``up @ down * alpha / rank``; ``alpha`` None means ``rank``: scale 1). Targets:
    the UNet's attention projections (to_q/k/v/out.0) and, with ``te``, the text encoder's
    (q/k/v/out_proj). The same ``seed`` and ``rank`` give the same weights as ``write_peft_sd_lora``."""
    alpha = float(rank if alpha is None else alpha)
    out = {}
    for (component, module), (down, up) in _random_lora(_sd_lora_targets(folder, te), rank, seed).items():
        name = ("lora_unet_" if component == "unet" else "lora_te_") + module.replace(".", "_")
        out.update({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                    f"{name}.alpha": torch.tensor(alpha)})
    return _save(out, dest)


def write_peft_sd_lora(folder: Path, dest: Path, *, rank: int = 4, alpha: float | None = None, seed: int = 0,
                       te: bool = True) -> Path:
    """The LoRA of ``write_kohya_sd_lora`` (same arguments, same weights) in diffusers / PEFT layout:
    ``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` and
    ``text_encoder.text_model.<module>.lora_A.weight``. That layout carries no alpha, so
    ``alpha / rank`` is folded into ``lora_B``."""
    scale = (rank if alpha is None else alpha) / rank
    out = {}
    for (component, module), (down, up) in _random_lora(_sd_lora_targets(folder, te), rank, seed).items():
        out.update({f"{component}.{module}.lora_A.weight": down, f"{component}.{module}.lora_B.weight": up * scale})
    return _save(out, dest)


def write_wan_lora(folder: Path, dest: Path, *, rank: int = 4, alpha: float | None = None, seed: int = 0,
                   subfolder: str = "transformer") -> Path:
    """A random LoRA for a Wan transformer in the original (Wan-AI / ComfyUI) layout:
    ``diffusion_model.blocks.N.{self_attn,cross_attn}.{q,k,v,o}`` and ``...ffn.{0,2}`` with
    ``.lora_A.weight`` / ``.lora_B.weight``, and ``.alpha`` when ``alpha`` is given (scale
    ``alpha / rank``; without it, 1)."""
    state, _ = _read_component(folder, subfolder)
    targets = {_wan_original_key(key)[:-len(".weight")]: tuple(value.shape) for key, value in state.items()
               if _WAN_LORA.match(key)}
    out = {}
    for module, (down, up) in _random_lora(targets, rank, seed).items():
        out.update({f"{WAN_LORA}{module}.lora_A.weight": down, f"{WAN_LORA}{module}.lora_B.weight": up})
        if alpha is not None:
            out[f"{WAN_LORA}{module}.alpha"] = torch.tensor(float(alpha))
    return _save(out, dest)
