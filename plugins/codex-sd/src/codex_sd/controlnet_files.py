"""Single ControlNet files for sd15 and sdxl (A1111's ``models/ControlNet``), read from their tensors (torch-free).

A1111 and ComfyUI keep ControlNets as one .safetensors file, either in the original layout (lllyasviel's
``control_v11p_sd15_canny``: ``input_hint_block.*``, ``zero_convs.*``, ``middle_block_out.*`` and the UNet
encoder's ``input_blocks.*``, sometimes under ``control_model.``) or in diffusers' layout saved as one file
(``controlnet_cond_embedding.*``, e.g. the SDXL ControlNets most tools share). diffusers'
``ControlNetModel.from_single_file`` converts either, given a config; without one it would fetch a reference
repository's from the hub. The config is derived here instead: a ControlNet copies its base UNet's encoder,
so the run's UNet gives the architecture (as ``ControlNetModel.from_unet`` does) and the file's own tensors
give what the UNet cannot: the control image encoder's widths. The family (SDXL's added text/time embedding,
``label_emb`` / ``add_embedding``) is read before anything loads.
"""

from __future__ import annotations

from typing import Any

from codex_core import UsageError

# the UNet config entries a ControlNet shares (ControlNetModel.from_unet's list)
FROM_UNET = ("in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
             "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn",
             "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim", "num_attention_heads",
             "use_linear_projection", "class_embed_type", "num_class_embeds", "upcast_attention",
             "resnet_time_scale_shift", "projection_class_embeddings_input_dim", "transformer_layers_per_block",
             "encoder_hid_dim", "encoder_hid_dim_type", "addition_embed_type", "addition_time_embed_dim")
# the control image encoder: its first convolution, then one stride-2 convolution per further width
# (original layout: input_hint_block.0, .4, .8, .12 of 0..14; diffusers': conv_in, blocks.1, .3, .5)
HINT_ORIGINAL = "input_hint_block."
HINT_DIFFUSERS = "controlnet_cond_embedding."


def _plain(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {key.removeprefix("control_model."): shape for key, shape in shapes.items()}


def family(shapes: dict[str, tuple[int, ...]]) -> tuple[bool | None, int | None]:
    """(SDXL or not, cross-attention width) of a ControlNet file; (None, None): not a ControlNet file."""
    keys = _plain(shapes)
    if f"{HINT_ORIGINAL}0.weight" not in keys and f"{HINT_DIFFUSERS}conv_in.weight" not in keys:
        return None, None
    text_time = "label_emb.0.0.weight" in keys or "add_embedding.linear_1.weight" in keys
    width = next((shape[1] for key, shape in keys.items() if key.endswith("attn2.to_k.weight") and len(shape) == 2),
                 None)
    return text_time, width


def original_layout(shapes: dict[str, tuple[int, ...]]) -> bool:
    return f"{HINT_ORIGINAL}0.weight" in _plain(shapes)


def conditioning_widths(shapes: dict[str, tuple[int, ...]]) -> list[int]:
    """The control image encoder's widths (``conditioning_embedding_out_channels``), from its convolutions."""
    keys = _plain(shapes)
    if f"{HINT_ORIGINAL}0.weight" in keys:
        names = [f"{HINT_ORIGINAL}{index}.weight" for index in range(0, 14, 4)]
    else:
        names = [f"{HINT_DIFFUSERS}conv_in.weight"] + [f"{HINT_DIFFUSERS}blocks.{index}.weight" for index in (1, 3, 5)]
    widths = []
    for name in names:
        if name not in keys:
            break
        widths.append(keys[name][0])
    return widths


def controlnet_config(unet_config: dict[str, Any], shapes: dict[str, tuple[int, ...]], field: str) -> dict[str, Any]:
    """The ControlNetModel config of a file for a run's UNet; a UsageError naming ``field`` when they differ."""
    text_time, width = family(shapes)
    if width is not None and width != unet_config.get("cross_attention_dim"):
        raise UsageError(f"{field}: its cross-attention is {width} wide, this checkpoint's UNet "
                         f"{unet_config.get('cross_attention_dim')} (e.g. an SD 2.x ControlNet on an SD 1.x model)")
    config = {key: unet_config[key] for key in FROM_UNET if key in unet_config}
    return {"_class_name": "ControlNetModel", **config, "conditioning_embedding_out_channels": conditioning_widths(shapes)}
