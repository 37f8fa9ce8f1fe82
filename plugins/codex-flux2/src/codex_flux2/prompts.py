"""How many tokens the FLUX.2 text encoders see for a prompt: the pipelines' own chat templating, uncut.

Flux2Pipeline wraps the prompt in a system turn and a user turn (``format_input``) and applies the
processor's chat template; Flux2KleinPipeline applies Qwen3's template to one user turn with thinking
off. Both then cut at max_sequence_length. Imports diffusers, so only a run imports this module.
"""

from __future__ import annotations


def templated_length(pipe, prompt: str) -> int:
    tokenizer = pipe.tokenizer
    if hasattr(pipe, "system_message"):  # Flux2Pipeline
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        ids = tokenizer.apply_chat_template(format_input([prompt], pipe.system_message), add_generation_prompt=False,
                                            tokenize=True, return_dict=True)["input_ids"]
        return len(ids[0] if ids and isinstance(ids[0], list) else ids)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    return len(tokenizer(text).input_ids)
