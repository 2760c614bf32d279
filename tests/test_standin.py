"""The SD v1-4-shaped stand-in: SD's sizes and settings, random weights, built in seconds."""
import pytest
import torch

import sdcourse
from sdcourse.standin import SD14_UNET, build_models, build_standin


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    folder = build_standin(tmp_path_factory.mktemp("standin") / "sd")
    return sdcourse.load_pipeline(folder, device="cpu")


def test_it_has_sd_v1_4_settings(standin):
    pipe = standin
    assert not sdcourse.is_mini_model(pipe)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 512 and pipe.vae_scale_factor == 8
    assert pipe.vae.config.latent_channels == pipe.unet.config.in_channels == 4
    assert pipe.vae.config.scaling_factor == 0.18215
    assert pipe.tokenizer.model_max_length == 77 and len(pipe.tokenizer) == 49408
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim
    cfg = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert cfg.steps_offset == 1 and cfg.skip_prk_steps and cfg.timestep_spacing == "leading"
    assert pipe.safety_checker is None


def test_its_scheduler_file_is_sd_v1_4s_and_names_no_spacing(tmp_path):
    """The folder's scheduler file is SD v1-4's, key for key: it names no timestep_spacing, so the schedulers a
    learner builds with from_config take their own defaults, as they do on the real checkpoint."""
    import json

    from diffusers import DDIMScheduler, LMSDiscreteScheduler, StableDiffusionPipeline

    from sdcourse.standin import SD14_SCHEDULER_FILE

    folder = build_standin(tmp_path / "sd")
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text()) == SD14_SCHEDULER_FILE
    assert "timestep_spacing" not in SD14_SCHEDULER_FILE
    assert json.loads((folder / "model_index.json").read_text())["scheduler"] == ["diffusers", "PNDMScheduler"]
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    klms = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    assert (klms.config.timestep_spacing, ddim.config.timestep_spacing) == ("linspace", "leading")
    klms.set_timesteps(20)
    pipe.scheduler.set_timesteps(20)
    assert (int(klms.timesteps[0]), int(pipe.scheduler.timesteps[0])) == (999, 951)


def test_it_generates_512_pixel_pictures_deterministically(standin):
    a = standin("a red circle", num_inference_steps=2, generator=sdcourse.make_generator(0), output_type="np").images
    b = standin("a red circle", num_inference_steps=2, generator=sdcourse.make_generator(0), output_type="np").images
    assert a.shape == (1, 512, 512, 3) and (a == b).all()


def test_the_weights_are_seeded_and_small(tmp_path):
    one = build_models(seed=0)["unet"].conv_in.weight
    two = build_models(seed=0)["unet"].conv_in.weight
    other = build_models(seed=1)["unet"].conv_in.weight
    assert torch.equal(one, two) and not torch.equal(one, other)
    folder = build_standin(tmp_path / "sd")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 20e6  # tiny widths: a few MB, mostly the 49,408-token embedding


def test_the_full_size_setting_is_sd_v1_4():
    unet = build_models("meta", full_size=True)["unet"]
    assert unet.config.block_out_channels == SD14_UNET["block_out_channels"]
    assert round(sum(p.numel() for p in unet.parameters()) / 1e6) == 860


def test_it_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="did not write"):
        build_standin(tmp_path)
    with pytest.raises(ValueError, match="mini model"):
        build_standin(sdcourse.MINI_MODEL_DIR)


def test_it_never_replaces_a_real_pipeline_folder(tmp_path):
    """A folder with a model_index.json and other files (a real or trained pipeline) is left exactly as it was."""
    import shutil

    real = tmp_path / "real"
    shutil.copytree(sdcourse.MINI_MODEL_DIR, real)
    (real / "notes.txt").write_text("keep me")
    before = {p.relative_to(real): p.read_bytes() for p in real.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="nothing was changed"):
        build_standin(real)
    assert {p.relative_to(real): p.read_bytes() for p in real.rglob("*") if p.is_file()} == before


def test_it_replaces_its_own_folder_and_only_that(tmp_path):
    folder = build_standin(tmp_path / "sd", seed=1)
    assert (folder / "sdcourse_standin.json").is_file()
    (folder / "unet" / "leftover.bin").write_bytes(b"x")
    build_standin(folder, seed=2)  # an earlier stand-in of its own: replaced whole
    assert not (folder / "unet" / "leftover.bin").exists() and '"seed": 2' in (folder / "sdcourse_standin.json").read_text()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        build_standin(tmp_path / "file")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(folder=None), TypeError, "folder must be a path"),
    (dict(folder=""), TypeError, "folder must be a path"),
    (dict(folder=3), TypeError, "folder must be a path"),
    (dict(full_size="yes"), TypeError, "full_size must be True or False"),
    (dict(full_size=1), TypeError, "full_size must be True or False"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed="0"), TypeError, "seed"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, error, match):
    args = {"folder": tmp_path / "sd", **kwargs}
    with pytest.raises(error, match=match):
        build_standin(args.pop("folder"), **args)
    assert not (tmp_path / "sd").exists()
