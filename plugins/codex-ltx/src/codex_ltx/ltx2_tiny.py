"""A tiny randomly initialised LTX-2 of the real architecture (diffusers format), built offline.

The real components at toy widths, saved by ``LTX2Pipeline.save_pretrained``: the audio-video
``LTX2VideoTransformer3DModel`` (2 layers, video 2x8 and audio 2x4 heads), the LTX-2 video VAE with
the real compression (32x in space, 8x in time: 4 down blocks, patch 4), the audio VAE with the real
mel and time compression (4x each: three levels) feeding a ``LTX2Vocoder`` with the real five
upsampling stages (x240: 24 kHz from 100 mel frames a second), the LTX-2.0 text connectors (one
projection of every Gemma layer, learnable registers) and a ``Gemma3ForConditionalGeneration`` text
encoder (a 2-layer Gemma-3 text model with a 1-layer SigLIP vision tower, as the real 12B has) with a
Gemma tokenizer made here. Widths are tied as in the real model: the transformer's caption_channels
is Gemma's hidden size, the connectors' width too, the audio patch is latent channels x latent mel
bins (= the audio VAE's base_channels), the vocoder reads output channels x mel bins.

diffusers' own LTX-2 fast tests download a tiny Gemma-3 and its tokenizer; this builds everything offline.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2Pipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

from codex_diffusers.tiny import TINY_VOCAB

TEXT_DIM = 16  # Gemma hidden size = the transformer's caption_channels = the connectors' width
TEXT_LAYERS = 2  # the connectors project all TEXT_LAYERS + 1 hidden states (the embeddings too)
REGISTERS = 8  # learnable registers per connector (128 in the real one); a prompt window is a multiple
MEL_BINS = 16  # 64 in the real audio VAE; 4x compression gives 4 latent mel bins
AUDIO_LATENT = 2  # audio VAE latent channels (8 in the real one): audio patch = 2 x 4 = 8
# The scheduler LTX-2's own sampler (ltx-core's LTX2Scheduler) describes: a token-count dependent
# shift between 0.95 and 2.05 over 1024..4096 tokens, stretched to a terminal sigma of 0.1.
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                 base_image_seq_len=1024, max_image_seq_len=4096, invert_sigmas=False, shift_terminal=0.1)
_CHARS = string.ascii_letters + string.digits + string.punctuation


def gemma_tokenizer():
    """A character-level Gemma tokenizer (a ``tokenizers`` BPE without merges, words marked with ``▁``): ``<pad>`` 0,
    ``<eos>`` 1, ``<bos>`` 2 and ``<unk>`` 3 as in Gemma's own vocabulary, ``<bos>`` first; every id below
    ``TINY_VOCAB``. The pipeline pads on the left, as it does for the real one."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "\u2581": 4}
    for char in _CHARS:
        vocab.setdefault(char, len(vocab))
        vocab.setdefault("\u2581" + char, len(vocab))
    assert len(vocab) < TINY_VOCAB - 8  # the image tokens sit at the top of the vocabulary
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    metaspace = dict(replacement="\u2581", prepend_scheme="first", split=True)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
    backend.decoder = decoders.Metaspace(**metaspace)
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                           special_tokens=[("<bos>", 2)])
    return GemmaTokenizer(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                          unk_token="<unk>", model_max_length=1024)


def _text_encoder():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=TINY_VOCAB, hidden_size=TEXT_DIM, intermediate_size=32,
                            num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                            sliding_window=16, max_position_embeddings=2048, pad_token_id=0, eos_token_id=1,
                            bos_token_id=2,
                            # the real one's attention kinds (5 sliding-window layers, then a global one) and
                            # its global layers' linearly scaled rotary positions
                            layer_types=["sliding_attention", "full_attention"],
                            rope_scaling={"factor": 8.0, "rope_type": "linear"})
    # 28 px / patch 14 = 2x2 patches pooled to mm_tokens_per_image 4 (the real one: 896 / 14 -> 256 tokens)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14, vision_use_head=False)
    torch.manual_seed(0)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=TINY_VOCAB - 3, eoi_token_index=TINY_VOCAB - 2,
                          image_token_index=TINY_VOCAB - 1)
    return Gemma3ForConditionalGeneration(config).eval()


def _transformer() -> LTX2VideoTransformer3DModel:
    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(
        in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=AUDIO_LATENT * MEL_BINS // 4, audio_out_channels=AUDIO_LATENT * MEL_BINS // 4,
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2,
        caption_channels=TEXT_DIM,
    )


def _connectors() -> LTX2TextConnectors:
    torch.manual_seed(0)
    # LTX-2.0 connectors: both project to the caption width (heads x head_dim = TEXT_DIM)
    return LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_attention_heads=2, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=REGISTERS,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=REGISTERS, connector_rope_base_seq_len=64,
    )


def _vae() -> AutoencoderKLLTX2Video:
    torch.manual_seed(0)
    return AutoencoderKLLTX2Video(  # the LTX-2 layout (4 down blocks, patch 4) with every width / 64
        latent_channels=8, block_out_channels=(4, 8, 16, 32), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), decoder_causal=False,
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )


def _audio_vae() -> AutoencoderKLLTX2Audio:
    torch.manual_seed(0)
    return AutoencoderKLLTX2Audio(base_channels=AUDIO_LATENT * MEL_BINS // 4, ch_mult=(1, 2, 4), num_res_blocks=1,
                                  latent_channels=AUDIO_LATENT, mel_bins=MEL_BINS)


def _vocoder() -> LTX2Vocoder:
    torch.manual_seed(0)
    # the real five upsampling stages (6*5*2*2*2 = 240 samples a mel frame), 32 channels halving to 1
    return LTX2Vocoder(in_channels=2 * MEL_BINS, hidden_channels=32, resnet_kernel_sizes=[3],
                       resnet_dilations=[[1, 3, 5]], output_sampling_rate=24000)


def build(dest: Path) -> None:
    pipe = LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae().eval(),
                        audio_vae=_audio_vae().eval(), text_encoder=_text_encoder(), tokenizer=gemma_tokenizer(),
                        connectors=_connectors().eval(), transformer=_transformer(), vocoder=_vocoder().eval())
    pipe.save_pretrained(dest, safe_serialization=True)
