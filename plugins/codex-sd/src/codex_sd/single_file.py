"""Offline diffusers config folders for single-file (A1111 / Civitai) SD 1.5 and SDXL checkpoints.

``Pipeline.from_single_file(file, config=FOLDER, local_files_only=True)`` needs a diffusers-format
folder holding each component's config and the tokenizers, but no weights. The package ships the
configs of the reference repos in ``single_file_configs/<variant>/``:

=============  ===================================================
sd15           stable-diffusion-v1-5/stable-diffusion-v1-5
sd15_inpaint   stable-diffusion-v1-5/stable-diffusion-inpainting
sdxl           stabilityai/stable-diffusion-xl-base-1.0
sdxl_inpaint   diffusers/stable-diffusion-xl-1.0-inpainting-0.1
=============  ===================================================

(SD 1.5's model index names no safety checker or feature extractor: codex never loads one.)
The CLIP tokenizers are generated, not shipped: ``vocab.json`` and ``merges.txt`` are built from
OpenAI's CLIP BPE merges file (``single_file_configs/clip_bpe/``, MIT; see its NOTICE.txt) the way
the Hugging Face ``openai/clip-vit-large-patch14`` tokenizer was. ``tokenizer`` is CLIP ViT-L's
(padding with ``<|endoftext|>``), SDXL's ``tokenizer_2`` OpenCLIP bigG's (padding with ``!``, id 0).

``config_folder(variant)`` materialises the complete folder once under the codex cache, atomically.
Only json, gzip and the file system are used: neither torch nor transformers is imported.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from codex_core import cache_dir

# Bump when a shipped config or the generated tokenizer files change: a new cache folder is built.
CONFIGS_VERSION = "1"

VARIANTS = ("sd15", "sd15_inpaint", "sdxl", "sdxl_inpaint")

DATA_DIR = Path(__file__).with_name("single_file_configs")
BPE_FILE = DATA_DIR / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz"

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
# CLIP's vocabulary: 256 byte symbols, the same with the end-of-word marker, the merges, 2 specials.
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48894

# tokenizer folder -> its pad token: CLIP ViT-L pads with <|endoftext|>, OpenCLIP bigG with "!".
_TOKENIZERS = {"tokenizer": EOS, "tokenizer_2": "!"}


def _tokenizer_folders(variant: str) -> tuple[str, ...]:
    return ("tokenizer", "tokenizer_2") if variant.startswith("sdxl") else ("tokenizer",)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from bytes to printable unicode characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[str, str]:
    """``(vocab.json text, merges.txt text)`` of the Hugging Face CLIP tokenizer."""
    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]  # line 0 is the file's "#version" header
    if len(merges) != N_MERGES or any(len(merge.split()) != 2 for merge in merges):
        raise RuntimeError(f"{BPE_FILE} is not the CLIP BPE merges file")
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"the CLIP vocabulary built from {BPE_FILE} has {len(vocab)} entries, not {VOCAB_SIZE}")
    vocab_text = json.dumps(vocab, ensure_ascii=False)
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    return vocab_text, merges_text


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_clip_tokenizer(folder: Path, pad_token: str = EOS) -> None:
    """Write a Hugging Face ``CLIPTokenizer`` folder (load it with ``CLIPTokenizer.from_pretrained``)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_text, merges_text = _vocab_and_merges()
    (folder / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(folder / "tokenizer_config.json", {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": MAX_LENGTH,
        "tokenizer_class": "CLIPTokenizer",
    })


def _build(variant: str, dest: Path) -> None:
    shutil.copytree(DATA_DIR / variant, dest, dirs_exist_ok=True)
    for name in _tokenizer_folders(variant):
        write_clip_tokenizer(dest / name, pad_token=_TOKENIZERS[name])


def config_folder(variant: str) -> Path:
    """The diffusers config folder (configs and tokenizers, no weights) for a single-file checkpoint variant.

    Built once under ``<codex cache>/configs/<variant>-<CONFIGS_VERSION>`` in a staging folder that is
    then renamed into place, so a half-written folder is never seen; later calls return it as is.
    Pass it to diffusers as a str: ``from_single_file(file, config=str(folder), local_files_only=True)``
    (diffusers' model loaders reject a ``Path`` for ``config``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown single-file config variant {variant!r}; known: {', '.join(VARIANTS)}")
    dest = cache_dir() / "configs" / f"{variant}-{CONFIGS_VERSION}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp's folder is private (0o700); the cache's other folders are not
        _build(variant, staging)
        os.replace(staging, dest)
    except OSError:
        if not dest.is_dir():  # not another process's folder renamed into place first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
