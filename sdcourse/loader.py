"""One function that returns a Stable Diffusion pipeline, with or without internet and GPU.

``load_pipeline()`` is the first call of every notebook. It decides three things:

* **which model**: a hub id (default ``CompVis/stable-diffusion-v1-4``), the bundled
  mini model (``"mini"`` or the environment variable ``SDCOURSE_MODEL=mini``), or a local
  diffusers folder. When the hub cannot be reached it falls back to the mini model and
  prints one line saying so, so the course runs everywhere;
* **which device**: CUDA, then Apple's MPS, then the CPU (:func:`pick_device`);
* **which dtype**: float16 on CUDA (half the memory, faster), float32 elsewhere.

Every notebook cell after loading works unchanged for both models, because the cells
read sizes from the pipeline's configs (``pipe.vae_scale_factor``,
``pipe.unet.config.sample_size``, ``pipe.tokenizer.model_max_length``).

Example::

    import sdcourse
    pipe = sdcourse.load_pipeline()          # the real model if reachable, else the mini model
    pipe = sdcourse.load_pipeline("mini")    # the bundled 64 x 64 model, always offline
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

import torch

from .folders import check_model_folder

MINI_MODEL_DIR = Path(__file__).resolve().parent / "mini_model"
"""Folder of the bundled mini model (a diffusers ``StableDiffusionPipeline`` folder)."""

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
"""The hub checkpoint the course's seeds and prompts were written for."""

MODEL_ENV_VAR = "SDCOURSE_MODEL"
"""Environment variable that picks the model when ``load_pipeline`` gets none."""

# Hub repositories known to hold ``*.fp16.safetensors`` files (diffusers' ``variant="fp16"``).
# For other ids the full-precision files are downloaded and cast, which always works.
FP16_VARIANT_IDS = frozenset({
    "CompVis/stable-diffusion-v1-4",
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
})

MIN_TOKENIZER_SIZE = 1000
PROBE_TIMEOUT_S = 1.0

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Return the torch device to run on: the one asked for, or the best one available.

    With ``device=None`` (or ``"auto"``) the order is CUDA, then MPS (Apple GPUs), then CPU.
    An explicit device is checked: asking for ``"cuda"`` on a machine without CUDA is an
    error, not a silent fall back to the CPU.

    Example::

        >>> sdcourse.pick_device("cpu")
        device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"device must be a string such as 'cuda', 'mps' or 'cpu', a torch.device or None; "
            f"got {device!r} of type {type(device).__name__}."
        )
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"Unknown device {device!r}; use 'cuda' (or 'cuda:0', 'cuda:1', ...), 'mps', 'cpu', "
            f"or None/'auto' to pick the best available one."
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for, but this machine has no CUDA GPU visible to torch; "
            f"use 'cpu' or None (auto). On Colab: Runtime > Change runtime type > GPU."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
            f"device(s), numbered from 0."
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {device!r} was asked for, but MPS (Apple GPU) is not available here; "
            f"use 'cpu' or None (auto)."
        )
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Return the dtype to load weights in: float16 on CUDA by default, float32 elsewhere.

    Half precision (float16, bfloat16) is only allowed on CUDA: CPU kernels for it are slow
    or missing, and this course's results on CPU are computed in float32.

    Example::

        >>> sdcourse.loader.resolve_dtype(None, torch.device("cpu"))
        torch.float32
    """
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype.strip().lower() not in _DTYPE_NAMES:
            raise ValueError(
                f"Unknown dtype {dtype!r}; use torch.float32, torch.float16 or torch.bfloat16 "
                f"(or the strings 'float32', 'float16', 'bfloat16')."
            )
        dtype = _DTYPE_NAMES[dtype.strip().lower()]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"Unsupported dtype {dtype!r}; use torch.float32, torch.float16 (CUDA) or torch.bfloat16 (CUDA)."
        )
    if dtype != torch.float32 and device.type != "cuda":
        raise ValueError(
            f"dtype {dtype} was asked for on device '{device}', but half precision is only supported "
            f"on CUDA here; use dtype=torch.float32 (or None) on '{device}'."
        )
    return dtype


def check_tokenizer(tokenizer) -> None:
    """Raise if ``tokenizer`` is too small to be a real CLIP tokenizer (fewer than 1,000 tokens).

    The trap this guards: with transformers 5, ``CLIPTokenizer.from_pretrained(<hub id>)`` while
    offline can return a tokenizer that knows only its 2 special tokens, without any error.
    Every prompt then becomes ``<|startoftext|> <|endoftext|> ...`` and the pictures ignore it.
    Real CLIP tokenizers have 49,408 tokens.

    Example::

        >>> sdcourse.check_tokenizer(pipe.tokenizer)   # silent when the tokenizer is fine  # doctest: +SKIP
    """
    try:
        size = len(tokenizer)
    except TypeError:
        raise TypeError(
            f"expected a tokenizer (something with a vocabulary, like transformers.CLIPTokenizer); "
            f"got {type(tokenizer).__name__}."
        ) from None
    if size < MIN_TOKENIZER_SIZE:
        raise ValueError(
            f"The tokenizer has only {size} tokens; a real CLIP tokenizer has 49,408 (at least "
            f"{MIN_TOKENIZER_SIZE} are required). This happens when transformers loads a hub id "
            f"offline without its vocabulary files: connect to the internet once to download them, "
            f"or use the bundled model with load_pipeline('mini')."
        )


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for offline mode (read now, not at import time)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        try:
            from huggingface_hub import constants
            return bool(constants.HF_HUB_OFFLINE)
        except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
            return False
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _probe_url(url: str, timeout: float) -> bool:
    """One HTTP HEAD request; any HTTP answer (even 404) means the server is there."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # no route, no name, refused, TLS failure, timeout, bad URL
        return False


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Return whether the Hugging Face hub answers an HTTP request within ``timeout`` seconds.

    The request runs in a background thread, so even a name lookup that hangs cannot block
    the caller for longer than ``timeout``. ``HF_ENDPOINT`` (a mirror) is honoured.
    """
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    result = []
    thread = threading.Thread(target=lambda: result.append(_probe_url(endpoint, timeout)), daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _classify(model: str | os.PathLike) -> tuple[str, str | Path]:
    """Return ("mini" | "path" | "hub", value) for a model argument, or raise a clear error."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise TypeError(
            f"model must be a string ('mini', a hub id such as {DEFAULT_MODEL!r}, or a folder path) "
            f"or None; got {model!r} of type {type(model).__name__}."
        )
    name = model.strip()
    if not name:
        raise ValueError(f"model is an empty string; use 'mini', a hub id such as {DEFAULT_MODEL!r}, "
                         f"the path of a diffusers folder, or None for the default.")
    if name.lower() == "mini":
        return "mini", MINI_MODEL_DIR
    path = Path(name).expanduser()
    if path.exists():
        return "path", path
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_like_path:
        raise ValueError(
            f"Model folder {model!r} does not exist; give an existing diffusers folder "
            f"(one with model_index.json), 'mini', or a hub id such as {DEFAULT_MODEL!r}."
        )
    if not _HUB_ID.match(name):
        raise ValueError(
            f"Unknown model {model!r}; use 'mini' (the bundled model), a hub id of the form "
            f"'organisation/name' such as {DEFAULT_MODEL!r}, or the path of a diffusers folder."
        )
    return "hub", name


def _check_pipeline_folder(path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a folder; give a diffusers pipeline folder "
                         f"(one that contains model_index.json).")
    if not (path / "model_index.json").is_file():
        raise ValueError(
            f"{str(path)!r} is not a diffusers pipeline folder: it has no model_index.json. "
            f"Give a folder saved with pipe.save_pretrained(...), 'mini', or a hub id."
        )
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError):
        index = None
    parts = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    if not isinstance(index, dict) or "StableDiffusion" not in str(index.get("_class_name", "")) or any(
            p not in index for p in parts):
        kind = index.get("_class_name", "no _class_name") if isinstance(index, dict) else "unreadable JSON"
        raise ValueError(
            f"{str(path)!r} is not a Stable Diffusion pipeline folder: its model_index.json ({kind}) must name "
            f"a StableDiffusion pipeline with {', '.join(parts)}. Give 'mini', a hub id, or such a folder."
        )


@contextlib.contextmanager
def _quiet_loading():
    """Hide the libraries' loading bars and routine log messages, so notebooks show only what matters.

    Python warnings (deprecations among them) are left alone: they are for the reader to see."""
    import diffusers
    import transformers

    d_level = diffusers.utils.logging.get_verbosity()
    t_level = transformers.utils.logging.get_verbosity()
    d_bars = diffusers.utils.logging.is_progress_bar_enabled()
    t_bars = transformers.utils.logging.is_progress_bar_enabled()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(d_level)
        transformers.utils.logging.set_verbosity(t_level)
        if d_bars:
            diffusers.utils.logging.enable_progress_bar()
        if t_bars:
            transformers.utils.logging.enable_progress_bar()


def _pipeline_class():
    import transformers

    level = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()  # hides "CLIPImageProcessor requires torchvision"
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        transformers.utils.logging.set_verbosity(level)
    return StableDiffusionPipeline


def _from_folder(path: Path, dtype: torch.dtype, mini: bool):
    check_model_folder(path)  # a missing or damaged file: one sentence naming it, before the libraries read it
    cls = _pipeline_class()
    kwargs = dict(dtype=dtype, local_files_only=True)
    if mini:
        kwargs["safety_checker"] = None  # the mini model draws coloured shapes; it has no checker
    with _quiet_loading():
        return cls.from_pretrained(path, **kwargs)


def _is_connection_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    connection = {"ConnectionError", "ConnectTimeout", "ConnectError", "ReadTimeout", "Timeout",
                  "TimeoutException", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                  "gaierror", "TimeoutError", "ConnectionRefusedError"}
    return bool(names & connection)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _from_hub(repo_id: str, dtype: torch.dtype, device: torch.device, token, local_only: bool):
    cls = _pipeline_class()
    kwargs = dict(dtype=dtype, token=token, local_files_only=local_only)
    if dtype == torch.float16 and device.type == "cuda" and repo_id in FP16_VARIANT_IDS:
        kwargs["variant"] = "fp16"
    try:
        with _quiet_loading():
            return cls.from_pretrained(repo_id, **kwargs)
    except Exception as exc:
        names = {type(e).__name__ for e in _chain(exc)}
        if "GatedRepoError" in names:
            raise PermissionError(
                f"{repo_id!r} is gated: accept its licence on https://huggingface.co/{repo_id} while "
                f"logged in, then log in here with huggingface_hub.notebook_login() (or a Colab secret "
                f"named HF_TOKEN)."
            ) from exc
        if "RepositoryNotFoundError" in names:
            raise ValueError(
                f"No model {repo_id!r} on the Hugging Face hub (or it is private and you are not "
                f"logged in); check the spelling, e.g. {DEFAULT_MODEL!r}."
            ) from exc
        raise


def _fallback(repo_id: str, reason: str, dtype: torch.dtype):
    print(f"sdcourse: {repo_id} cannot be loaded ({reason}); using the bundled mini model "
          f"(64x64 pictures of coloured shapes) instead.")
    pipe = _from_folder(MINI_MODEL_DIR, dtype, mini=True)
    pipe.sdcourse_origin = f"in place of {repo_id}, which cannot be loaded ({reason})"
    return pipe


def describe_model(pipe) -> str:
    """One line: which model ``pipe`` is and why it was chosen, e.g. "the course's mini model (64 x 64
    pictures of coloured shapes), chosen by SDCOURSE_MODEL=mini". Names no folder of your machine, so it can
    stand in a notebook's committed output. Pipelines that ``load_pipeline`` did not load are described by
    their model alone."""
    if not hasattr(pipe, "config") or not hasattr(pipe, "unet"):
        raise TypeError(f"describe_model needs a diffusers pipeline, got {type(pipe).__name__}")
    size = pipe.unet.config.sample_size * getattr(pipe, "vae_scale_factor", 8)
    if is_mini_model(pipe):
        what = f"the course's mini model ({size} x {size} pictures of coloured shapes)"
    else:
        name = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "") or "a pipeline"
        if Path(str(name)).is_absolute():
            name = f"the folder {Path(str(name)).name!r}"
        what = f"{name} ({size} x {size} pictures)"
    origin = getattr(pipe, "sdcourse_origin", None)
    return f"{what}, {origin}" if origin else what


def sharing_pipeline(pipe, cls, caller: str):
    """A pipeline of class ``cls`` (img2img, inpainting, ...) that shares ``pipe``'s modules: no second copy.

    The loaded pipeline's own safety-checker setting is passed along, so the mini model (which
    has none and needs none) gives no warning and a real checkpoint keeps its checker.
    """
    if not hasattr(pipe, "components"):
        raise TypeError(f"{caller} needs a diffusers pipeline, got {type(pipe).__name__}")
    shared = cls(**pipe.components, requires_safety_checker=bool(pipe.config.get("requires_safety_checker", True)))
    shared.set_progress_bar_config(disable=True)
    return shared


def is_mini_model(pipe) -> bool:
    """True when ``pipe`` is the bundled mini model (however it was loaded), False for anything else.

    The course uses it where the two models need different settings, for example K-LMS's guidance scale in
    chapter 4 (``schedulers.klms_guidance``) and the claims that chapters check on the mini model's results
    (``claims.check_claim``).
    """
    name = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "")
    try:
        return bool(name) and Path(name).resolve() == MINI_MODEL_DIR
    except (OSError, ValueError):
        return False


def _which_model(model) -> tuple:
    """The model to load and why it is that one: (model, reason)."""
    if model is not None:
        return model, "asked for by the code"
    if os.environ.get(MODEL_ENV_VAR):
        return os.environ[MODEL_ENV_VAR], f"chosen by {MODEL_ENV_VAR}={os.environ[MODEL_ENV_VAR]}"
    return DEFAULT_MODEL, "the course's default"


def _from_hub_or_mini(repo_id: str, dt, dev, token, chosen: str) -> tuple:
    """(pipeline, origin): ``repo_id`` from the hub or its local cache; when the hub is unreachable and the
    cache lacks it, the mini model (:func:`_fallback`, origin None)."""
    offline = hub_offline()
    if not offline and not hub_reachable():
        reason = "the hub did not answer within a second"
        offline = True
    else:
        reason = "HF_HUB_OFFLINE is set and it is not in the local cache"
    try:
        pipe = _from_hub(repo_id, dt, dev, token, local_only=offline)
    except Exception as exc:  # offline: "not in the cache" is an OSError; online: connection errors
        if not ((offline and isinstance(exc, OSError)) or _is_connection_error(exc)):
            raise
        return _fallback(repo_id, reason if offline else "the hub connection failed", dt), None
    return pipe, f"{'from the local cache' if offline else 'from the Hugging Face hub'}, {chosen}"


def load_pipeline(model: str | os.PathLike | None = None, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None, *, token: str | None = None):
    """Return a ready-to-use ``StableDiffusionPipeline`` on the chosen device.

    Args:
        model: ``None`` (the environment variable ``SDCOURSE_MODEL``, else
            ``"CompVis/stable-diffusion-v1-4"``), ``"mini"`` (the bundled model), a hub id
            ``"organisation/name"``, or the path of a diffusers pipeline folder.
        device: ``None``/``"auto"`` (CUDA, then MPS, then CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        dtype: ``None`` (float16 on CUDA, float32 elsewhere), ``torch.float32``, or
            ``torch.float16`` (CUDA only).
        token: a Hugging Face token for gated or private models. Leave it ``None`` to use the
            login stored by ``huggingface_hub.notebook_login()`` (or Colab's ``HF_TOKEN`` secret);
            never paste a token into a notebook.

    When a hub model cannot be loaded because the hub is unreachable (``HF_HUB_OFFLINE=1``,
    or no connection within a second) and it is not in the local cache, the mini model is
    returned instead and one line says so. The mini model is loaded without a safety
    checker (it has none); hub models keep the library's default safety checker.

    Example::

        >>> pipe = sdcourse.load_pipeline("mini", device="cpu")  # doctest: +SKIP
        >>> image = pipe("a small red circle in the center on a black background",  # doctest: +SKIP
        ...              num_inference_steps=20, generator=sdcourse.make_generator(0)).images[0]
    """
    dev = pick_device(device)
    dt = resolve_dtype(dtype, dev)
    model, chosen = _which_model(model)  # the argument, else $SDCOURSE_MODEL, else SD v1-4
    kind, value = _classify(model)  # "mini", "path" or "hub"
    if kind == "mini":
        pipe, origin = _from_folder(MINI_MODEL_DIR, dt, mini=True), chosen
    elif kind == "path":
        _check_pipeline_folder(value)
        pipe, origin = _from_folder(value, dt, mini=value.resolve() == MINI_MODEL_DIR), chosen
    else:  # the hub or its local cache; the mini model (and one line saying why) when neither has it
        pipe, origin = _from_hub_or_mini(value, dt, dev, token, chosen)
    if origin is not None:
        pipe.sdcourse_origin = origin
    check_tokenizer(pipe.tokenizer)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=False, desc="denoising")
    return pipe
