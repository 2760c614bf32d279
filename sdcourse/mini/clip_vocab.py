"""Build the real CLIP BPE tokenizer files from the vocabulary that open-clip-torch ships.

The course's mini model uses exactly the tokenizer of Stable Diffusion v1.x: the
49,408-token byte-level BPE vocabulary of OpenAI's CLIP. No hub download is needed:
the `open-clip-torch` wheel carries that vocabulary as
``open_clip/bpe_simple_vocab_16e6.txt.gz`` (one merge rule per line). This module
turns it into the ``vocab.json`` / ``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads.

Run it with::

    python -m sdcourse.mini.clip_vocab       # writes sdcourse/mini_model/tokenizer/

How the ids are laid out (the same order open_clip and OpenAI use):

* ids 0-255: the 256 byte symbols (bytes mapped to printable unicode characters);
* ids 256-511: the same symbols with the end-of-word marker ``</w>``;
* ids 512-49405: one token per merge rule, in the file's order (48,894 rules);
* 49406 ``<|startoftext|>`` and 49407 ``<|endoftext|>``.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from ..loader import MINI_MODEL_DIR

VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894 merge rules become tokens
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77


def byte_symbols() -> list[str]:
    """The 256 printable characters that stand for bytes, in CLIP's vocabulary order.

    The 188 bytes that are printable latin-1 characters stand for themselves and come
    first, in byte order; the 68 others (whitespace, control characters) are moved to
    the code points 256, 257, ... and follow, so no symbol is whitespace.
    """
    printable = [b for b in range(256)
                 if ord("!") <= b <= ord("~") or ord("¡") <= b <= ord("¬") or ord("®") <= b <= ord("ÿ")]
    n_other = 256 - len(printable)
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(n_other)]


def bpe_file() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed open-clip-torch wheel.

    open_clip's package ``__init__`` imports torchvision, which this course does
    not need, so the file is located without importing the package.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "open-clip-torch is not installed; it carries the CLIP vocabulary file. "
            "Install it with: pip install --no-deps open-clip-torch==3.3.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the open-clip-torch install")
    return path


def build_vocab(bpe_path: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """Return (token -> id mapping, merge lines) for the CLIP BPE vocabulary."""
    lines = gzip.open(bpe_path or bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : 1 + N_MERGES]  # the first line is a version header
    if len(merges) != N_MERGES:
        raise ValueError(f"expected {N_MERGES} merge rules, found {len(merges)}")
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab, merges


def write_tokenizer(folder: Path, bpe_path: Path | None = None) -> Path:
    """Write vocab.json, merges.txt and the configs that CLIPTokenizer.from_pretrained reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return folder


if __name__ == "__main__":
    out = write_tokenizer(MINI_MODEL_DIR / "tokenizer")
    print(f"wrote the CLIP tokenizer ({VOCAB_SIZE} tokens) to {out}")
