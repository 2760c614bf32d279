"""load_pipeline, pick_device and the dtype rules: the mini model, local folders, the offline fallback, bad input."""
import importlib
import shutil
import time

import pytest
import torch

import sdcourse
from sdcourse import loader
from sdcourse.loader import DEFAULT_MODEL, MINI_MODEL_DIR

@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Every test starts from the same environment: offline, no model chosen."""
    monkeypatch.delenv("SDCOURSE_MODEL", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def diffusers_imported():
    """Import diffusers once up front so the timings below measure loading, not importing."""
    loader._pipeline_class()


def _default_model_cached():
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(DEFAULT_MODEL, "model_index.json"), str)


def _is_mini(pipe):
    return pipe.unet.config.sample_size * pipe.vae_scale_factor == 64 and len(pipe.tokenizer) == 49408


# ---------------------------------------------------------------- the mini model and local folders

def test_mini_by_name(capsys):
    pipe = sdcourse.load_pipeline("mini", device="cpu")
    assert _is_mini(pipe)
    assert pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32
    assert pipe.safety_checker is None
    assert pipe._progress_bar_config.get("disable") is False  # the denoising bar shows in notebooks
    assert capsys.readouterr().out == ""  # asked for explicitly: nothing to announce


def test_mini_by_environment_variable(monkeypatch, capsys):
    monkeypatch.setenv("SDCOURSE_MODEL", "mini")
    pipe = sdcourse.load_pipeline()
    assert _is_mini(pipe)
    assert capsys.readouterr().out == ""


def test_local_folder_by_path(tmp_path):
    copy = tmp_path / "my model"
    shutil.copytree(MINI_MODEL_DIR, copy)
    pipe = sdcourse.load_pipeline(copy)  # a pathlib.Path
    assert _is_mini(pipe)
    pipe = sdcourse.load_pipeline(str(copy))  # and a string
    assert pipe.unet.config.sample_size == 8
    assert not sdcourse.is_mini_model(pipe)  # same weights, but another folder: not the bundled model


def test_is_mini_model_however_loaded(monkeypatch):
    assert sdcourse.is_mini_model(sdcourse.load_pipeline("mini", device="cpu"))
    assert sdcourse.is_mini_model(sdcourse.load_pipeline(MINI_MODEL_DIR, device="cpu"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sdcourse.is_mini_model(sdcourse.load_pipeline(device="cpu"))  # the offline fallback


def test_generates_a_picture():
    pipe = sdcourse.load_pipeline("mini")
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a small red circle in the center on a black background", num_inference_steps=2,
               generator=sdcourse.make_generator(0))
    assert out.images[0].size == (64, 64)


def test_describe_model_says_which_model_and_why(monkeypatch, tmp_path):
    """One line for a notebook's output: which model, and why it was chosen; no folder of this machine."""
    by_name = sdcourse.describe_model(sdcourse.load_pipeline("mini", device="cpu"))
    assert by_name == "the course's mini model (64 x 64 pictures of coloured shapes), asked for by the code"
    monkeypatch.setenv("SDCOURSE_MODEL", "mini")
    assert sdcourse.describe_model(sdcourse.load_pipeline(device="cpu")).endswith("chosen by SDCOURSE_MODEL=mini")
    monkeypatch.delenv("SDCOURSE_MODEL")
    copy = tmp_path / "my model"
    shutil.copytree(MINI_MODEL_DIR, copy)
    line = sdcourse.describe_model(sdcourse.load_pipeline(copy, device="cpu"))
    assert line == "the folder 'my model' (64 x 64 pictures), asked for by the code" and str(tmp_path) not in line
    if not _default_model_cached():
        line = sdcourse.describe_model(sdcourse.load_pipeline(device="cpu"))
        assert line.startswith("the course's mini model") and f"in place of {DEFAULT_MODEL}" in line
        assert "HF_HUB_OFFLINE" in line
    with pytest.raises(TypeError, match="needs a diffusers pipeline, got str"):
        sdcourse.describe_model("mini")


# ---------------------------------------------------------------- falling back when the hub is out of reach

def test_offline_fallback_is_fast_and_says_so_once(capsys):
    if _default_model_cached():
        pytest.skip(f"{DEFAULT_MODEL} is in this machine's cache, so offline mode loads it")
    start = time.perf_counter()
    pipe = sdcourse.load_pipeline()
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n[offline fallback to the mini model took {elapsed:.2f} s]")
    assert _is_mini(pipe)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert DEFAULT_MODEL in lines[0] and "mini model" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert elapsed < 2.0


def test_unreachable_hub_falls_back_without_hanging(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.perf_counter()
    pipe = sdcourse.load_pipeline("sdcourse-tests/not-cached-anywhere")
    elapsed = time.perf_counter() - start
    assert _is_mini(pipe)
    line, = capsys.readouterr().out.strip().splitlines()
    assert "did not answer" in line and "sdcourse-tests/not-cached-anywhere" in line
    assert elapsed < 2.0


def test_probe_is_bounded_by_its_timeout(monkeypatch):
    """A network that never answers (a hanging name lookup, a silent firewall) cannot block loading."""
    monkeypatch.setattr(loader, "_probe_url", lambda url, timeout: time.sleep(5) or True)
    start = time.perf_counter()
    assert loader.hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - start < 1.0


def test_probe_answers(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert loader.hub_reachable() is False  # connection refused
    monkeypatch.setenv("HF_ENDPOINT", "not a url")
    assert loader.hub_reachable() is False


def test_probe_sees_a_server_that_answers(monkeypatch):
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert loader.hub_reachable() is True  # it answers "501 unsupported method": it is there
    finally:
        server.shutdown()
        server.server_close()


def test_hub_offline_reads_the_environment_now(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loader.hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not loader.hub_offline()


class FakePipeline:
    """Stands in for StableDiffusionPipeline to see what load_pipeline asks the hub for."""
    calls = []
    error = None

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        cls.calls.append((name, kwargs))
        if cls.error is not None:
            raise cls.error
        return "pipeline"


@pytest.fixture
def fake_hub(monkeypatch):
    FakePipeline.calls, FakePipeline.error = [], None
    monkeypatch.setattr(loader, "_pipeline_class", lambda: FakePipeline)
    return FakePipeline


def test_fp16_variant_only_on_cuda_fp16_for_known_ids(fake_hub):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    loader._from_hub(DEFAULT_MODEL, torch.float16, cuda, None, local_only=False)
    loader._from_hub("someone/other-model", torch.float16, cuda, None, local_only=False)
    loader._from_hub(DEFAULT_MODEL, torch.float32, cpu, None, local_only=False)
    variants = [kwargs.get("variant") for _, kwargs in fake_hub.calls]
    assert variants == ["fp16", None, None]
    assert all(kwargs["dtype"] in (torch.float16, torch.float32) for _, kwargs in fake_hub.calls)


def test_token_is_passed_through_and_defaults_to_stored_login(fake_hub):
    loader._from_hub(DEFAULT_MODEL, torch.float32, torch.device("cpu"), "hf_example", local_only=False)
    loader._from_hub(DEFAULT_MODEL, torch.float32, torch.device("cpu"), None, local_only=False)
    assert [kwargs["token"] for _, kwargs in fake_hub.calls] == ["hf_example", None]


def _http_module():
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("huggingface_hub's HTTP library is neither httpx2 nor httpx")


def test_connection_error_while_loading_falls_back(fake_hub, monkeypatch, capsys):
    http = _http_module()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(loader, "hub_reachable", lambda timeout=1.0: True)
    fake_hub.error = http.ConnectError("connection reset")
    monkeypatch.setattr(loader, "_from_folder", lambda path, dtype, mini: "mini pipeline")
    monkeypatch.setattr(loader, "check_tokenizer", lambda tok: None)
    with pytest.raises(AttributeError):  # the stand-in string has no .tokenizer: fallback was reached
        loader.load_pipeline(DEFAULT_MODEL)
    assert "connection failed" in capsys.readouterr().out


def _hub_error(cls_name):
    from huggingface_hub import errors

    http = _http_module()
    response = http.Response(401, request=http.Request("GET", "https://huggingface.co/x"))
    return getattr(errors, cls_name)("refused", response=response)


def test_gated_model_asks_to_accept_licence(fake_hub):
    fake_hub.error = _hub_error("GatedRepoError")
    with pytest.raises(PermissionError, match="accept its licence.*notebook_login"):
        loader._from_hub(DEFAULT_MODEL, torch.float32, torch.device("cpu"), None, local_only=False)


def test_missing_hub_model_names_it(fake_hub):
    fake_hub.error = _hub_error("RepositoryNotFoundError")
    with pytest.raises(ValueError, match="No model 'someone/typo'"):
        loader._from_hub("someone/typo", torch.float32, torch.device("cpu"), None, local_only=False)


# ---------------------------------------------------------------- devices and dtypes

def test_pick_device_auto():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert sdcourse.pick_device().type == expected
    assert sdcourse.pick_device("auto").type == expected
    assert sdcourse.pick_device(" CPU ") == torch.device("cpu")
    assert sdcourse.pick_device(torch.device("cpu")) == torch.device("cpu")


def test_dtype_defaults():
    assert loader.resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert loader.resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert loader.resolve_dtype("fp16", torch.device("cuda")) == torch.float16


@pytest.mark.parametrize("device, error, match", [
    ("tpu", ValueError, "Unknown device 'tpu'"),
    ("gpu0", ValueError, "Unknown device 'gpu0'"),
    (3, TypeError, "got 3 of type int"),
])
def test_unknown_device(device, error, match):
    with pytest.raises(error, match=match):
        sdcourse.pick_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_without_cuda():
    with pytest.raises(ValueError, match="'cuda' was asked for, but this machine has no CUDA"):
        sdcourse.load_pipeline("mini", device="cuda")


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="float16 was asked for on device 'cpu'.*use dtype=torch.float32"):
        sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float16)


@pytest.mark.parametrize("dtype", ["fp64", torch.float64, torch.int8])
def test_unsupported_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        loader.resolve_dtype(dtype, torch.device("cpu"))


# ---------------------------------------------------------------- bad model names and folders

def test_unknown_model_name():
    with pytest.raises(ValueError, match="Unknown model 'sd15'.*'mini'.*organisation/name"):
        sdcourse.load_pipeline("sd15")


def test_empty_model_name():
    with pytest.raises(ValueError, match="model is an empty string"):
        sdcourse.load_pipeline("  ")


def test_model_of_wrong_type():
    with pytest.raises(TypeError, match="model must be a string.*got 42"):
        sdcourse.load_pipeline(42)


def test_missing_folder():
    with pytest.raises(ValueError, match="Model folder './no/such/model' does not exist"):
        sdcourse.load_pipeline("./no/such/model")


def test_folder_that_is_not_a_diffusers_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="is not a diffusers pipeline folder: it has no model_index.json"):
        sdcourse.load_pipeline(tmp_path)


def test_file_instead_of_folder(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        sdcourse.load_pipeline(str(weights))


def test_folder_with_a_tiny_tokenizer_is_refused(tmp_path):
    """The guard runs on every load: a 2-token tokenizer (the offline trap) never reaches a notebook."""
    import json

    copy = tmp_path / "broken"
    shutil.copytree(MINI_MODEL_DIR, copy)
    (copy / "tokenizer" / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (copy / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match=r"tokenizer has only \d+ tokens; a real CLIP tokenizer has 49,408"):
        sdcourse.load_pipeline(copy)
