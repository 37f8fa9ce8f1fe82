"""Tiny randomly initialised FLUX.2 models of the real architecture (diffusers format).

Component sizes follow diffusers' own FLUX.2 fast tests (tests/pipelines/flux2/), with changes that
keep the tiny models honest about the real checkpoints:
- the VAE (``AutoencoderKLFlux2``) has four blocks, so ``vae_scale_factor`` is 8 like the real one and
  the size rule (multiples of 16 = VAE stride 8 x 2x2 latent patches) is the real rule;
- the text encoders are deep enough for the layers the pipelines read by default (FLUX.2 [dev] stacks
  Mistral's hidden states 10, 20 and 30; [klein] Qwen3's 9, 18 and 27), so the pipelines run with
  their own ``text_encoder_out_layers``; they are 16 wide, so each layer costs next to nothing;
- the tokenizers are byte-level BPEs trained here, offline, on the pipelines' own system message and
  a few words, with the real special tokens and chat templates in the real layout (Mistral's
  ``[SYSTEM_PROMPT]...[INST]...[/INST]``; Qwen3's ``<|im_start|>`` turns with the empty think block
  of ``enable_thinking=False``), so a prompt takes a few tokens and max_sequence_length behaves.

One difference, forced by this machine: FLUX.2 [dev]'s tokenizer is a ``PixtralProcessor`` (the
Mistral tokenizer plus the Pixtral image processor), which transformers 5 builds only with
torchvision installed; the tiny [dev] model saves the processor's own tokenizer (``LlamaTokenizer``,
what the processor wraps) instead. Flux2Pipeline calls only ``apply_chat_template`` on it, which
gives the same ids for text either way. engines.py refuses a real [dev] folder before loading when
torchvision is missing, with the install command.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

from codex_diffusers.tiny import TINY_VOCAB

TEXT_DIM = 16  # the text encoders' hidden size; the transformer reads 3 stacked layers: joint_attention_dim 48
LATENT_CHANNELS = 1  # the real VAE has 32; after 2x2 patching the transformer takes 4 (the real one 128)
MISTRAL_LAYERS = 30  # Flux2Pipeline's text_encoder_out_layers default (10, 20, 30) needs 30 (the real one has 40)
QWEN3_LAYERS = 27  # Flux2KleinPipeline's default (9, 18, 27) needs 27 (Qwen3-4B and -8B have 36)

# scheduler/scheduler_config.json of black-forest-labs/FLUX.2-dev and the klein repos (see reference_configs/)
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential")

# The Mistral Small 3.1 chat template, reduced to what it renders for system, user and assistant turns
# (text and image parts): [SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST].
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{%- else %}{%- set parts = message['content'] %}{%- endif %}"
    "{%- if message['role'] == 'system' %}[SYSTEM_PROMPT]"
    "{%- for part in parts %}{{ part['text'] }}{%- endfor %}[/SYSTEM_PROMPT]"
    "{%- elif message['role'] == 'user' %}[INST]"
    "{%- for part in parts %}{%- if part['type'] == 'text' %}{{ part['text'] }}{%- else %}[IMG]{%- endif %}"
    "{%- endfor %}[/INST]"
    "{%- else %}{%- for part in parts %}{{ part['text'] }}{%- endfor %}{{ eos_token }}"
    "{%- endif %}{%- endfor %}"
)
MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                   "[IMG]", "[IMG_BREAK]", "[IMG_END]"]

# Qwen3's chat template, reduced to user/assistant turns and the generation prompt; enable_thinking=False
# adds the empty think block, as the real template does.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
QWEN3_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

CORPUS = ["a red fox in snow", "a cat on a sofa", "a photo of a lighthouse at dawn, oil painting",
          "make it winter", "combine the two images"]


def _bpe(special: list[str]):
    """A byte-level BPE trained on the pipelines' system message and a few words: real prompts tokenise
    to a handful of ids, every id below TINY_VOCAB."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    backend = Tokenizer(BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=TINY_VOCAB // 2, special_tokens=special, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([SYSTEM_MESSAGE, *CORPUS], trainer)
    assert backend.get_vocab_size() < TINY_VOCAB
    return backend


def mistral_tokenizer():
    """The tokenizer inside FLUX.2 [dev]'s PixtralProcessor (LlamaTokenizer), with the Mistral chat template."""
    from transformers import LlamaTokenizer

    return LlamaTokenizer(tokenizer_object=_bpe(MISTRAL_SPECIAL), bos_token="<s>", eos_token="</s>",
                          unk_token="<unk>", pad_token="<pad>", chat_template=MISTRAL_CHAT_TEMPLATE,
                          add_bos_token=False)


def qwen_tokenizer():
    """A Qwen2 tokenizer (what FLUX.2 [klein] loads for Qwen3) with the Qwen3 chat template."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(tokenizer_object=_bpe(QWEN3_SPECIAL), eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          unk_token=None, bos_token=None, chat_template=QWEN3_CHAT_TEMPLATE)


def _mistral3():
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(0)
    # The real Mistral Small 3.1/3.2 keeps its Pixtral vision tower (image_token_index 10); the tiny one too,
    # 1 layer of 16 (the [dev] pipeline encodes text only).
    config = Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=TINY_VOCAB, hidden_size=TEXT_DIM, intermediate_size=32,
                         num_hidden_layers=MISTRAL_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=1024, rms_norm_eps=1e-5, sliding_window=None,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3),
        vision_config=dict(model_type="pixtral", hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=8, image_size=32, patch_size=8, num_channels=3,
                           hidden_act="silu"),
        image_token_index=MISTRAL_SPECIAL.index("[IMG]"), spatial_merge_size=2, projector_hidden_act="gelu",
        multimodal_projector_bias=False, vision_feature_layer=-1, tie_word_embeddings=False,  # as the real one
    )
    return Mistral3ForConditionalGeneration(config).eval()


def _qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=TINY_VOCAB, hidden_size=TEXT_DIM, intermediate_size=32,
                         num_hidden_layers=QWEN3_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=QWEN3_SPECIAL.index("<|im_end|>"),
                         pad_token_id=QWEN3_SPECIAL.index("<|endoftext|>"))
    return Qwen3ForCausalLM(config).eval()


def _vae() -> AutoencoderKLFlux2:
    torch.manual_seed(0)
    return AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 8, 8), layers_per_block=1,
        latent_channels=LATENT_CHANNELS, norm_num_groups=1, sample_size=32,
        use_quant_conv=True, use_post_quant_conv=True,  # as the real FLUX.2 VAE
    )


def _transformer(guidance_embeds: bool) -> Flux2Transformer2DModel:
    torch.manual_seed(0)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * TEXT_DIM, timestep_guidance_channels=256, mlp_ratio=3.0,
        axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=guidance_embeds,
    )


def build(dest: Path) -> None:
    """A tiny FLUX.2 [dev]: Mistral3 text encoder, guidance-embedding transformer."""
    from diffusers import Flux2Pipeline

    pipe = Flux2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(),
                         text_encoder=_mistral3(), tokenizer=mistral_tokenizer(), transformer=_transformer(True))
    pipe.save_pretrained(dest, safe_serialization=True)


def build_klein(dest: Path, distilled: bool = True) -> None:
    """A tiny FLUX.2 [klein]: Qwen3 text encoder, no guidance embedding; ``distilled`` is the pipeline's
    ``is_distilled`` (the 4-step models; False: the Base models, with real CFG)."""
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(),
                              text_encoder=_qwen3(), tokenizer=qwen_tokenizer(), transformer=_transformer(False),
                              is_distilled=distilled)
    pipe.save_pretrained(dest, safe_serialization=True)
