"""Is this a whole diffusers model folder? One sentence naming the damaged file, before any library reads it.

``diffusers`` and ``transformers`` read a pipeline folder part by part, and a missing or damaged file
surfaces deep inside them: a tokenizer without ``vocab.json`` says "`vocab` and `merges` must be both be
from memory or both filenames", a missing ``tokenizer/`` folder asks to connect to the internet, a
cut-short weight file fails while the weights are copied. :func:`check_model_folder` reads only the small
parts (the JSON files and each weight file's header), in milliseconds, and says which file is wrong:

>>> from sdcourse import MINI_MODEL_DIR
>>> check_model_folder(MINI_MODEL_DIR).name
'mini_model'
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

__all__ = ["check_model_folder"]

WEIGHTS = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin",
           "diffusion_pytorch_model.bin")
NEEDED = {  # what each part of a Stable Diffusion folder must hold: one of these sets of files
    "CLIPTokenizer": (("tokenizer.json",), ("vocab.json", "merges.txt")),
    "CLIPTextModel": (("config.json",),),
    "AutoencoderKL": (("config.json",),),
    "UNet2DConditionModel": (("config.json",),),
}
# The first part of every tensor's name in each kind of weight file: a file whose names share none of them holds
# another part's weights (a VAE file copied over the UNet's loads as "Cannot copy out of meta tensor").
PREFIXES = {
    "CLIPTextModel": ("text_model.", "embeddings.", "encoder.", "final_layer_norm."),
    "AutoencoderKL": ("encoder.", "decoder.", "quant_conv.", "post_quant_conv."),
    "UNet2DConditionModel": ("conv_in.", "time_embedding.", "down_blocks.", "up_blocks.", "mid_block.", "conv_out."),
}
FIX = "copy the folder again from where it came from (for the bundled model: reinstall the course)"


class DamagedModelError(OSError):
    """A model folder with a missing, malformed or cut-short file; the message names the file."""


def check_model_folder(folder) -> Path:
    """Check that ``folder`` holds a complete diffusers pipeline; return it as a Path.

    Reads ``model_index.json``, then for each part it names: the part's folder, its JSON files, the files
    its class needs (a CLIP tokenizer's ``vocab.json`` and ``merges.txt``, or its ``tokenizer.json``) and the
    header of its weight file (a ``.safetensors`` file shorter than its header says is cut short). Raises
    ``DamagedModelError`` (an ``OSError``) with one sentence that names the file and what to do.
    """
    folder = Path(folder)
    index = _json(folder / "model_index.json")
    for part, spec in index.items():
        if part.startswith("_") or not isinstance(spec, list) or spec[:1] == [None]:
            continue  # settings such as requires_safety_checker, and parts the folder leaves out
        where = folder / part
        if not where.is_dir():
            raise DamagedModelError(f"{where} is missing, but model_index.json lists the part {part!r} "
                                    f"({spec[-1]}); {FIX}.")
        choices = NEEDED.get(spec[-1], ((),))
        if not any(all((where / name).is_file() for name in files) for files in choices):
            missing = [name for name in choices[-1] if not (where / name).is_file()]
            raise DamagedModelError(f"{where / missing[0]} is missing ({spec[-1]} needs it); {FIX}.")
        for path in sorted(where.glob("*.json")):
            _json(path)
        if spec[-1] in ("CLIPTextModel", "AutoencoderKL", "UNet2DConditionModel"):
            weights = [where / name for name in WEIGHTS if (where / name).is_file()]
            if not weights:
                raise DamagedModelError(f"{where} has no weight file (one of {', '.join(WEIGHTS[:2])}); {FIX}.")
            if weights[0].suffix == ".safetensors":
                names = _check_safetensors(weights[0])
                _check_part(weights[0], names, spec[-1])
    return folder


def _json(path: Path) -> dict:
    """The JSON object in ``path``, or DamagedModelError naming the file."""
    if not path.is_file():
        raise DamagedModelError(f"{path} is missing, so this is not a diffusers model folder; {FIX}.")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedModelError(f"{path} is not valid JSON ({err}); {FIX}.") from None
    if not isinstance(value, dict):
        raise DamagedModelError(f"{path} holds a JSON {type(value).__name__}, not an object of settings; {FIX}.")
    return value


def _check_part(path: Path, names: list[str], kind: str) -> None:
    """The tensors in ``path`` must be named as a ``kind``'s are; say whose weights they look like otherwise."""
    mine = PREFIXES.get(kind)
    if not mine or not names or any(n.startswith(mine) for n in names):
        return
    # a CLIP text encoder's "encoder." and a VAE's overlap: look for the names only one kind has
    telling = {k: tuple(p for p in v if all(p not in o for o_kind, o in PREFIXES.items() if o_kind != k))
               for k, v in PREFIXES.items()}
    whose = next((k for k, v in telling.items() if any(n.startswith(v) for n in names)), None)
    looks = f"they look like {whose} weights" if whose else f"its tensors are named {names[0]!r} and so on"
    raise DamagedModelError(f"{path} does not hold {kind} weights ({looks}); {FIX}.")


def _check_safetensors(path: Path) -> list[str]:
    """A safetensors file: 8 bytes of header length, a JSON header, then the tensors' bytes. Returns the
    tensors' names."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        header = f.read(length) if length is not None and 0 < length <= size - 8 else b""
    try:
        tensors = json.loads(header)
        end = max((t["data_offsets"][1] for k, t in tensors.items() if k != "__metadata__"), default=0)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError):
        raise DamagedModelError(f"{path} is not a readable safetensors file (its header is damaged); {FIX}.") from None
    if 8 + length + end > size:
        raise DamagedModelError(f"{path} is cut short: {size:,} bytes where its header promises "
                                f"{8 + length + end:,}; {FIX}.")
    return [k for k in tensors if k != "__metadata__"]
