"""Offline tokenizers for the tiny models: they must save and load back to the same ids."""

from transformers import AutoTokenizer

from codex_diffusers.tiny import TINY_VOCAB, clip_tokenizer, t5_tokenizer


def test_clip_tokenizer_round_trips_and_pads_to_77(tmp_path):
    built = clip_tokenizer()
    built.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ours = built("A red fox, 4k!", padding="max_length", max_length=built.model_max_length).input_ids
    assert loaded("A red fox, 4k!", padding="max_length", max_length=loaded.model_max_length).input_ids == ours
    assert len(ours) == 77 and max(ours) < TINY_VOCAB


def test_t5_tokenizer_round_trips_through_save_pretrained(tmp_path):
    from transformers import AutoTokenizer

    built = t5_tokenizer()
    built.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["A red Fox!  in snow, 4k", "", "über"]
    ours = built(texts, padding="max_length", max_length=32, truncation=True).input_ids
    assert loaded(texts, padding="max_length", max_length=32, truncation=True).input_ids == ours
    assert loaded.pad_token_id == 0 and loaded.eos_token_id == 1 and loaded.unk_token_id == 2
    assert max(max(ids) for ids in ours) < TINY_VOCAB and ours[0][:2] == loaded.convert_tokens_to_ids(["\u2581A",
                                                                                                        "\u2581r"])
