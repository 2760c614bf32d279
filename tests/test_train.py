"""The training command: every stage runs, checkpoints are written and resumed, the export loads.

A few steps of each stage on tiny batches (the real run takes hours; see the model card). Nothing here
touches the shipped weights: the export goes to a temporary folder.
"""
import json
from dataclasses import asdict, replace

import pytest
import torch

import sdcourse
from sdcourse import shapes
from sdcourse.mini import arch, train

TINY = ["--vae-steps", "2", "--decoder-steps", "2", "--robust-decoder-steps", "2", "--unet-steps", "2",
        "--polish-steps", "2", "--polish-samples", "4", "--vae-batch", "2", "--unet-batch", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out, export = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("export") / "model"
    train.main(["--out", str(out), "--export", str(export), *TINY])
    return out, export


def test_every_stage_leaves_a_checkpoint(run):
    out, _ = run
    for name in ("vae.pt", "decoder.pt", "decoder_robust.pt", "unet.pt"):
        assert torch.load(out / name, map_location="cpu")["step"] == 2, name
    info = json.loads((out / "train_info.json").read_text())
    assert (info["vae_steps"], info["unet_steps"], info["seed"]) == (2, 2, 0)
    # an untrained UNet draws nothing that matches its caption, so the polish is skipped and says so
    log = (out / "train.log").read_text()
    if "nothing to polish on" in log:
        assert info["polish_steps"] == 0 and not (out / "decoder_polish.pt").exists()
    else:
        assert info["polish_steps"] == 2 and (out / "decoder_polish.pt").exists()


def test_every_setting_is_an_option_and_goes_into_the_exported_record(run):
    """One option per Recipe field; the exported folder's train_info.json holds the run's recipe and machine."""
    _, recipe = train.parse_args(["--unet-lr", "1e-4", "--polish-guidances", "2", "7.5", "--seed", "3"])
    assert recipe == replace(train.Recipe(), unet_lr=1e-4, polish_guidances=(2.0, 7.5), seed=3)
    out, export = run
    record = json.loads((export / "train_info.json").read_text())
    assert record == json.loads((out / "train_info.json").read_text())
    _, tiny = train.parse_args(TINY)
    expected = json.loads(json.dumps(asdict(replace(tiny, polish_steps=record["polish_steps"]))))
    assert {k: record[k] for k in expected} == expected
    assert record["device"] == "cpu" and set(record["stage_minutes_this_run"]) >= {"vae", "decoder", "unet"}


def test_export_loads_as_a_pipeline_with_sds_scaling_factor(run):
    """The measured scaling factor (recorded in train_info.json) is folded into the VAE: the folder says 0.18215."""
    out, export = run
    info = json.loads((out / "train_info.json").read_text())
    pipe = sdcourse.load_pipeline(export, device="cpu")
    assert pipe.vae.config.scaling_factor == 0.18215
    assert info["scaling_factor"] != pytest.approx(0.18215, abs=1e-3)
    assert not sdcourse.is_mini_model(pipe)
    image = pipe("a red circle", num_inference_steps=2, generator=sdcourse.make_generator(0)).images[0]
    assert image.size == (64, 64)


def test_export_stores_float16_and_loads_float32_by_default(run):
    """Half-size weights on disk, float32 components from plain from_pretrained calls (as SD v1.x)."""
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextModel

    _, export = run
    with safe_open(export / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert CLIPTextModel.from_pretrained(export, subfolder="text_encoder").dtype == torch.float32
    assert UNet2DConditionModel.from_pretrained(export, subfolder="unet").dtype == torch.float32


def test_rerun_resumes_instead_of_retraining(run):
    out, export = run
    before = torch.load(out / "unet.pt", map_location="cpu")["ema"]
    train.main(["--out", str(out), "--export", str(export), *TINY])
    log = (out / "train.log").read_text()
    for stage in ("VAE", "decoder", "decoder_robust"):
        assert f"{stage} already trained (2 steps)" in log, stage
    assert "UNet: resuming at step 2" in log
    assert "latent pool: reusing latents.pt" in log
    after = torch.load(out / "unet.pt", map_location="cpu")
    assert after["step"] == 2
    assert len(before) == len(after["ema"])
    assert all(torch.equal(a, b) for a, b in zip(before, after["ema"]))  # the exported (EMA) weights did not move


def test_fold_latent_scale_keeps_what_the_unet_sees_and_what_is_decoded():
    """Folding a measured factor into the VAE: scaled latents and decoded pictures stay the same."""
    import copy

    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**arch.VAE_CONFIG).eval()
    x = train.scenes_tensor(shapes.all_scenes()[:3])
    folded = train.fold_latent_scale(copy.deepcopy(vae), measured=0.4)
    assert folded.config.scaling_factor == 0.18215
    with torch.no_grad():
        before, after = vae.encode(x).latent_dist, folded.encode(x).latent_dist
        torch.testing.assert_close(after.mean * 0.18215, before.mean * 0.4, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after.std * 0.18215, before.std * 0.4, rtol=1e-4, atol=1e-6)
        z = torch.randn(2, 4, 8, 8)
        torch.testing.assert_close(folded.decode(z / 0.18215).sample, vae.decode(z / 0.4).sample, rtol=1e-4, atol=1e-5)


def test_polish_decoder_trains_on_given_latents(tmp_path):
    """Stage 4 on its own, with stand-in latents (the real ones come from a trained UNet)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**arch.VAE_CONFIG)
    scenes = shapes.all_scenes()
    index = torch.tensor([0, 5, 9])
    with torch.no_grad():
        latents = vae.encode(train.scenes_tensor([scenes[i] for i in index.tolist()])).latent_dist.mean
    decoder_before = [p.clone() for p in vae.decoder.parameters()]
    encoder_before = [p.clone() for p in vae.encoder.parameters()]
    recipe = train.Recipe(polish_steps=2, vae_batch=2, latent_noise=0.3)
    train.polish_decoder(tmp_path, vae, latents, index, recipe, scaling=0.4, device="cpu")
    assert torch.load(tmp_path / "decoder_polish.pt", map_location="cpu")["step"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, vae.decoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, vae.encoder.parameters()))  # the encoder stays


def test_a_varied_world_pool_has_looks_per_scene_pictures_of_each_scene():
    """--looks-per-scene: the UNet's pool holds that many seeded, different pictures of every scene."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**arch.VAE_CONFIG).eval()
    recipe = train.Recipe(looks_per_scene=2, polish_steps=0)
    mean, std, scaling, scene_of = train.latent_cache(vae, "cpu", recipe)
    n = len(shapes.all_scenes())
    assert len(mean) == len(std) == 2 * n and scene_of.tolist()[:4] == [0, 0, 1, 1]
    assert not torch.allclose(mean[0], mean[1])  # two looks of one scene: two different pictures
    again = train.latent_cache(vae, "cpu", recipe)
    assert torch.equal(again[0], mean) and again[2] == scaling  # seeded
    flat_mean, _, _, flat_scene_of = train.latent_cache(vae, "cpu")
    assert len(flat_mean) == n and torch.equal(flat_scene_of, torch.arange(n))


def test_the_latent_pool_is_reused_only_for_the_same_encoder_and_looks(tmp_path):
    """A resumed run reads the pool from latents.pt; a changed encoder or look setting encodes it again."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**arch.VAE_CONFIG).eval()
    recipe = train.Recipe(polish_steps=0)
    first = train.cached_latents(tmp_path, vae, "cpu", recipe)
    saved = torch.load(tmp_path / "latents.pt")
    saved["mean"] = saved["mean"] + 1  # marks the file, so that a reuse shows
    torch.save(saved, tmp_path / "latents.pt")
    reused = train.cached_latents(tmp_path, vae, "cpu", recipe)
    assert torch.equal(reused[0], first[0] + 1) and "reusing latents.pt" in (tmp_path / "train.log").read_text()

    with torch.no_grad():
        vae.encoder.conv_in.weight.add_(0.1)
    changed = train.cached_latents(tmp_path, vae, "cpu", recipe)
    assert torch.equal(changed[0], train.latent_cache(vae, "cpu", recipe)[0])
    assert not torch.equal(changed[0], first[0]) and not torch.equal(changed[0], first[0] + 1)

    varied = train.cached_latents(tmp_path, vae, "cpu", replace(recipe, looks_per_scene=1))
    assert not torch.equal(varied[0], changed[0])  # one look per scene: other pictures, so a new pool


def test_unet_trains_on_a_varied_pool_with_each_entrys_caption(tmp_path, monkeypatch):
    """Stage 5 on a pool of several pictures per scene: it draws pool entries of training scenes only, and
    captions each with its own scene."""
    seen = []
    real = shapes.random_caption
    monkeypatch.setattr(shapes, "random_caption", lambda scene, rng, p: seen.append(scene) or real(scene, rng, p))
    n = len(shapes.all_scenes())
    scene_of = torch.arange(n).repeat_interleave(2)
    mean, std = torch.randn(2 * n, 4, 8, 8), torch.full((2 * n, 4, 8, 8), 0.01)
    recipe = train.Recipe(looks_per_scene=2, polish_steps=0, unet_steps=2, unet_batch=8, caption_dropout=0.0)
    train.train_unet(tmp_path, recipe, mean, std, 1.0, "cpu", scene_of)
    held = set(shapes.split_scenes()[1])
    assert len(seen) == 16 and not held & set(seen)
    assert torch.load(tmp_path / "unet.pt", map_location="cpu")["step"] == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(looks_per_scene=4), "--polish-steps 0"),
    (dict(looks_per_scene=-1), "looks_per_scene"),
    (dict(look_strength=1.5), "look_strength"),
    (dict(smooth_weight=10.0), "smoothness penalty"),
    (dict(smooth_steps=100), "smoothness penalty"),
    (dict(smooth_weight=10.0, smooth_steps=20000), "smoothness penalty"),
    (dict(smooth_weight=-1.0, smooth_steps=100), "smooth_weight must be from 0"),
])
def test_bad_world_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.Recipe(**kwargs)


class ScalingUNet(torch.nn.Module):
    """A stand-in UNet whose noise prediction is x times a number read off the text embedding (its first
    entry), so that the guidance direction Delta(x) = (s_caption - s_empty) x has a known Jacobian."""

    def forward(self, x, t, emb):
        from types import SimpleNamespace
        return SimpleNamespace(sample=x * emb[:, 0, 0].view(-1, 1, 1, 1))


def test_the_smoothness_penalty_is_the_guidance_directions_jacobian_in_sigma_units():
    n, k = 6, 3
    xt, t = torch.randn(n, 4, 8, 8), torch.tensor([10, 500, 999, 0, 300, 700])
    emb = torch.zeros(n, 77, 8)
    emb[:, 0, 0] = torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0, 0.0])  # s_caption per latent
    uncond = torch.zeros(1, 77, 8)
    uncond[0, 0, 0] = 0.25  # s_empty
    ab = torch.linspace(0.999, 0.005, 1000)
    keep, v = torch.tensor([0, 2, 4]), torch.randn(k, 4, 8, 8)
    pred, penalty = train.denoise_and_smoothness(ScalingUNet(), xt, t, emb, uncond, keep, v, 0.05, ab)
    assert torch.allclose(pred, ScalingUNet()(xt, t, emb).sample)  # the plain prediction for the whole batch
    slope = emb[keep, 0, 0] - 0.25  # dDelta/dx = slope x identity, so |dDelta/dx v|^2 = slope^2 |v|^2
    expected = ((1 - ab[t[keep]]) * slope**2 * v.square().mean(dim=(1, 2, 3))).mean()
    assert torch.allclose(penalty, expected, rtol=1e-4)
    same = torch.zeros(n, 77, 8)
    same[:, 0, 0] = 0.25  # the caption reacts to x exactly as the empty prompt does: no penalty
    assert train.denoise_and_smoothness(ScalingUNet(), xt, t, same, uncond, keep, v, 0.05, ab)[1] == 0
    pred, penalty = train.denoise_and_smoothness(ScalingUNet(), xt, t, emb, uncond, torch.tensor([], dtype=torch.long),
                                                 v[:0], 0.05, ab)
    assert penalty == 0 and pred.shape == xt.shape


def test_the_penalty_can_be_taken_at_its_own_low_noise_points():
    n = 4
    xt, t = torch.randn(n, 4, 8, 8), torch.tensor([900, 800, 700, 600])
    emb = torch.zeros(n, 77, 8)
    emb[:, 0, 0] = 2.0
    uncond = torch.zeros(1, 77, 8)
    ab = torch.linspace(0.999, 0.005, 1000)
    keep, v = torch.tensor([0, 1]), torch.randn(2, 4, 8, 8)
    points = (torch.randn(2, 4, 8, 8), torch.tensor([5, 20]))
    pred, penalty = train.denoise_and_smoothness(ScalingUNet(), xt, t, emb, uncond, keep, v, 0.05, ab, points)
    assert torch.allclose(pred, ScalingUNet()(xt, t, emb).sample)  # the batch's own prediction is unchanged
    expected = ((1 - ab[points[1]]) * 4.0 * v.square().mean(dim=(1, 2, 3))).mean()  # at the points' timesteps
    assert torch.allclose(penalty, expected, rtol=1e-4)


class StretchingUNet(torch.nn.Module):
    """A stand-in UNet whose captioned prediction is A x for a fixed matrix A acting on each latent's numbers, and
    whose empty-prompt prediction is 0, so that the guidance direction's Jacobian is A."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x, t, emb):
        from types import SimpleNamespace
        out = (x.flatten(1) @ self.a.T).view(x.shape)
        return SimpleNamespace(sample=out * (emb[:, 0, 0] != 0).view(-1, 1, 1, 1))


def test_the_stiffest_direction_is_the_one_guidance_stretches_most():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    stretch = torch.linspace(0.1, 1.0, 64)
    stretch[5] = 3.0  # one direction stretched far more than the others
    unet = StretchingUNet(q @ torch.diag(stretch) @ q.T)
    xk, tk = torch.randn(3, 4, 4, 4, generator=g), torch.tensor([10, 20, 30])
    emb, uncond = torch.ones(3, 77, 8), torch.zeros(1, 77, 8)
    v = train.stiffest_direction(unet, xk, tk, emb, uncond, torch.randn(3, 4, 4, 4, generator=g), 0.05, 12)
    assert torch.allclose(v.square().mean(dim=(1, 2, 3)), torch.ones(3))  # unit root mean square per latent
    top = q[:, 5] / q[:, 5].square().mean().sqrt()
    cos = (v.flatten(1) @ top) / (v.flatten(1).norm(dim=1) * top.norm())
    assert (cos.abs() > 0.99).all()
    # along it, the penalty's stretch is 3 (in sigma units times sqrt(1 - alpha_bar)); a hinge at 2 keeps 1 of it
    ab = torch.full((1000,), 0.75)  # 1 - alpha_bar = 0.25: the stretch reads 3 * 0.5 = 1.5
    keep = torch.tensor([0, 1, 2])
    plain = train.denoise_and_smoothness(unet, xk, tk, emb, uncond, keep, v, 0.01, ab)[1]
    assert abs(plain.item() - 1.5**2) < 1e-2
    hinged = train.denoise_and_smoothness(unet, xk, tk, emb, uncond, keep, v, 0.01, ab, hinge=1.0)[1]
    assert abs(hinged.item() - 0.5**2) < 1e-2
    assert train.denoise_and_smoothness(unet, xk, tk, emb, uncond, keep, v, 0.01, ab, hinge=2.0)[1] == 0


def test_low_noise_points_stay_below_their_noise_level():
    sched = train.noise_schedule().scheduler
    x0 = torch.randn(256, 4, 8, 8)
    xt, t = train.low_noise_points(x0, 0.3, sched, torch.Generator().manual_seed(0))
    ab = sched.alphas_cumprod[t]
    assert (((1 - ab) / ab).sqrt() <= 0.3).all() and t.max() > 20  # all low, and spread over the low range
    noise = (xt - ab.sqrt().view(-1, 1, 1, 1) * x0) / (1 - ab).sqrt().view(-1, 1, 1, 1)
    assert abs(noise.std().item() - 1) < 0.05  # x_t = sqrt(ab) x0 + sqrt(1 - ab) noise, unit noise
    with pytest.raises(ValueError, match="smooth_sigma_max"):
        train.Recipe(smooth_sigma_max=-1.0)


def test_low_noise_points_can_take_a_band_of_noise_levels():
    sched = train.noise_schedule().scheduler
    x0 = torch.randn(512, 4, 8, 8)
    _, t = train.low_noise_points(x0, 3.0, sched, torch.Generator().manual_seed(0), sigma_min=1.0)
    sigma = ((1 - sched.alphas_cumprod[t]) / sched.alphas_cumprod[t]).sqrt()
    assert (sigma >= 1.0).all() and (sigma <= 3.0).all() and sigma.min() < 1.1 and sigma.max() > 2.8  # spread over it
    with pytest.raises(ValueError, match="no timestep"):
        train.low_noise_points(x0, 3.0, sched, torch.Generator().manual_seed(0), sigma_min=2e3)
    with pytest.raises(ValueError, match="smooth_sigma_min"):
        train.Recipe(smooth_sigma_min=-1.0)


def test_the_penalty_runs_in_the_last_smooth_steps_only(tmp_path, monkeypatch):
    calls = []
    real = train.denoise_and_smoothness
    monkeypatch.setattr(train, "denoise_and_smoothness", lambda *a: calls.append(len(a[5])) or real(*a))
    n = len(shapes.all_scenes())
    mean, std = torch.randn(n, 4, 8, 8), torch.full((n, 4, 8, 8), 0.01)
    recipe = train.Recipe(unet_steps=3, unet_batch=8, caption_dropout=0.0, smooth_weight=10.0, smooth_steps=2,
                          smooth_batch=5)
    train.train_unet(tmp_path, recipe, mean, std, 1.0, "cpu")
    assert calls == [5, 5]  # steps 2 and 3, five captioned latents each
    assert "smoothness" in (tmp_path / "train.log").read_text()


def test_the_vae_stages_see_varied_pictures_in_a_varied_world():
    import random

    scenes = shapes.all_scenes()
    flat = train.world_batch(random.Random(0), scenes, 4, train.Recipe())
    varied = train.world_batch(random.Random(0), scenes, 4, train.Recipe(looks_per_scene=1, polish_steps=0))
    assert flat.shape == varied.shape == (4, 3, 64, 64)
    assert torch.equal(flat, train.scenes_tensor(random.Random(0).choices(scenes, k=4)))  # as before
    colours = lambda x: torch.unique(x[0].reshape(3, -1), dim=1).shape[1]  # distinct RGB triples
    assert colours(flat) == 2 and colours(varied) > 20


def test_continue_unet_goes_on_from_the_shipped_weights_and_writes_its_record(tmp_path):
    """scripts/continue_unet.py: two more steps of stage 5 from the shipped weights; the exported folder loads
    and its train_info.json says what was run, from which step."""
    from conftest import load_script

    load_script("scripts/continue_unet.py").main(["--out", str(tmp_path), "--from-step", "18000", "--steps", "18002"])
    record = json.loads((tmp_path / "model" / "train_info.json").read_text())
    assert (record["from_step"], record["unet_steps"], record["looks_per_scene"]) == (18000, 18002, 0)
    assert torch.load(tmp_path / "unet.pt", map_location="cpu")["step"] == 18002
    pipe = sdcourse.load_pipeline(tmp_path / "model", device="cpu")
    assert pipe.vae.config.scaling_factor == 0.18215


def test_continue_unet_can_add_the_smoothness_penalty_at_a_constant_rate(tmp_path):
    from conftest import load_script

    script = load_script("scripts/continue_unet.py")
    script.main(["--out", str(tmp_path), "--from-step", "18000", "--steps", "18002", "--lr", "1e-4", "--constant-lr",
                 "--ema-decay", "0.99", "--smooth-weight", "0.3", "--smooth-steps", "2"])
    record = json.loads((tmp_path / "model" / "train_info.json").read_text())
    assert (record["unet_lr"], record["lr_floor"], record["unet_warmup"]) == (1e-4, 1.0, 0)
    assert (record["ema_decay"], record["smooth_weight"], record["smooth_steps"]) == (0.99, 0.3, 2)
    assert "smoothness" in (tmp_path / "train.log").read_text()


def test_continue_unet_trains_on_another_vaes_latents_and_folds_their_scale_in(tmp_path):
    """--vae: a UNet for a new autoencoder. Its latents' measured scale is what the UNet learns on, and the
    export folds it into that VAE, so that the folder's 0.18215 times its latents has a standard deviation of 1."""
    from conftest import load_script
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**arch.vae_config(8, 1)).save_pretrained(tmp_path / "vae")  # untrained: latents far from std 1
    load_script("scripts/continue_unet.py").main(["--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "run"),
                                                  "--from-step", "0", "--steps", "2"])
    record = json.loads((tmp_path / "run" / "model" / "train_info.json").read_text())
    assert (record["vae_width"], record["vae_layers"]) == (8, 1) and "folded in" in record["record"]
    measured = torch.load(tmp_path / "run" / "latents.pt", map_location="cpu")["scaling"]
    assert abs(measured - 0.18215) > 0.05  # else the fold would not be tested
    vae = AutoencoderKL.from_pretrained(tmp_path / "run" / "model" / "vae").eval()
    assert vae.config.scaling_factor == 0.18215 and vae.config.block_out_channels[0] == 8
    with torch.no_grad():
        z = vae.encode(train.scenes_tensor(shapes.all_scenes()[:256])).latent_dist.mean
    assert 0.8 < (z * 0.18215).std().item() < 1.25
    # a stage that stops before the end of its schedule: exported as it is, nothing trained further
    load_script("scripts/continue_unet.py").main(["--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "run"),
                                                  "--from-step", "0", "--steps", "10", "--export-now",
                                                  "--export", str(tmp_path / "stage")])
    record = json.loads((tmp_path / "stage" / "train_info.json").read_text())
    assert record["step_reached"] == 2 and "to step 2 of a schedule of 10" in record["record"]
    assert torch.load(tmp_path / "run" / "unet.pt", map_location="cpu")["step"] == 2


@pytest.mark.parametrize("extra, match", [
    (["--smooth-weight", "0.3"], "smoothness penalty"),
    (["--from-model", "nowhere"], "not a diffusers folder"),
    (["--vae", "nowhere"], "not an AutoencoderKL folder"),
])
def test_continue_unet_refuses_bad_options_in_one_line(tmp_path, capsys, extra, match):
    from conftest import load_script

    with pytest.raises(SystemExit):
        load_script("scripts/continue_unet.py").main(["--out", str(tmp_path), "--from-step", "1", "--steps", "2", *extra])
    assert match in capsys.readouterr().err


def test_subject_weights_mark_the_shape_and_weight_0_is_the_plain_loss():
    scene = shapes.Scene("circle", "red", "blue", "center", "large")
    x = train.scenes_tensor([scene])
    w = train.subject_weights(x, 4.0)
    assert w.shape == (1, 1, 64, 64) and set(w.unique().tolist()) == {1.0, 5.0}
    share = (w == 5.0).float().mean().item()
    assert 0.08 < share < 0.2  # a large circle: pi * 0.2^2 of the picture, about 12.6%
    red = torch.tensor(shapes.PALETTE["red"], dtype=torch.float32) / 127.5 - 1
    pixels = x[0][:, w[0, 0] == 5.0]  # (3, how many)
    assert torch.allclose(pixels, red[:, None].expand_as(pixels), atol=1e-6)  # exactly the shape's pixels

    class Identity:  # a "decoder" that returns its input, so the loss is between two pictures
        def decode(self, z):
            return type("Out", (), {"sample": z})

    target, rec = x, x + 0.1 * torch.randn_like(x)
    plain = torch.nn.functional.mse_loss(rec, target) + torch.nn.functional.l1_loss(rec, target)
    assert torch.equal(train.decoder_loss(Identity(), rec, target, train.Recipe())[0], plain)
    shape_only = rec.clone()
    shape_only[:, :, w[0, 0] == 1.0] = target[:, :, w[0, 0] == 1.0]  # wrong only on the shape
    weighted = train.decoder_loss(Identity(), shape_only, target, train.Recipe(subject_weight=4.0))[0]
    unweighted = train.decoder_loss(Identity(), shape_only, target, train.Recipe())[0]
    assert weighted > 3 * unweighted  # the shape's errors count 5x, normalised by the mean weight
    with pytest.raises(ValueError, match="subject_weight"):
        train.Recipe(subject_weight=-1.0)


def test_fit_decoder_keeps_the_encoder_and_the_unet_and_can_write_sds_scheduler(tmp_path):
    """scripts/fit_decoder.py: the decoder changes, the encoder and the UNet do not, and the folder loads the way
    tutorials load SD (components by subfolder, schedulers from its config)."""
    from conftest import load_script
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    script = load_script("scripts/fit_decoder.py")
    export = tmp_path / "model"
    script.main(["--out", str(tmp_path / "ckpt"), "--export", str(export), "--steps", "2", "--robust-steps", "2",
                 "--sd-scheduler"])
    assert torch.load(tmp_path / "ckpt" / "decoder_robust.pt", map_location="cpu")["step"] == 2
    old, new = (AutoencoderKL.from_pretrained(f, subfolder="vae") for f in (sdcourse.MINI_MODEL_DIR, export))
    assert all(torch.equal(a, b) for a, b in zip(old.encoder.state_dict().values(), new.encoder.state_dict().values()))
    assert torch.equal(old.quant_conv.weight, new.quant_conv.weight)
    assert not all(torch.equal(a, b) for a, b in zip(old.decoder.parameters(), new.decoder.parameters()))
    assert new.config.scaling_factor == 0.18215
    u_old, u_new = (UNet2DConditionModel.from_pretrained(f, subfolder="unet") for f in (sdcourse.MINI_MODEL_DIR, export))
    assert all(torch.equal(a, b) for a, b in zip(u_old.state_dict().values(), u_new.state_dict().values()))
    cfg = json.loads((export / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == "PNDMScheduler" and "timestep_spacing" not in cfg and cfg["steps_offset"] == 1
    pipe = StableDiffusionPipeline.from_pretrained(export)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.timestep_spacing == "leading"
    record = json.loads((export / "train_info.json").read_text())
    assert record["stages"][-1]["subject_weight"] == 4.0 and record["stages"][-1]["robust_decoder_steps"] == 2


@pytest.mark.parametrize("extra, match", [
    (["--steps", "0", "--robust-steps", "0"], "not both 0"),
    (["--unet-from", "nowhere"], "not a diffusers model folder"),
    (["--subject-weight", "-2"], "subject_weight"),
])
def test_fit_decoder_refuses_bad_options_in_one_line(tmp_path, capsys, extra, match):
    from conftest import load_script

    with pytest.raises(SystemExit):
        load_script("scripts/fit_decoder.py").main(["--out", str(tmp_path), "--export", str(tmp_path / "m"), *extra])
    assert match in capsys.readouterr().err


def test_every_number_of_the_recipe_has_limits():
    numeric = {f.name for f in fields_of_recipe() if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)}
    assert numeric == set(train.LIMITS)
    train.Recipe()  # the shipped recipe is inside them


def fields_of_recipe():
    from dataclasses import fields

    return fields(train.Recipe)


@pytest.mark.parametrize("kwargs, match", [
    (dict(caption_dropout=5.0), "caption_dropout must be from 0 to 1"),
    (dict(caption_part_dropout=-0.1), "caption_part_dropout"),
    (dict(unet_lr=-1e-4), "unet_lr must be from"),
    (dict(vae_lr=0.0), "vae_lr must be from"),
    (dict(decoder_lr=float("nan")), "decoder_lr"),
    (dict(unet_lr=float("inf")), "unet_lr"),
    (dict(unet_batch=0), "unet_batch must be from 1"),
    (dict(vae_batch=-3), "vae_batch"),
    (dict(smooth_batch=0), "smooth_batch"),
    (dict(ema_decay=2.0), "ema_decay must be from 0 to 1 (not included)"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(vae_steps=0), "vae_steps must be from 1"),
    (dict(unet_steps=0), "unet_steps must be from 1"),
    (dict(unet_steps=-5), "unet_steps"),
    (dict(decoder_steps=-1), "decoder_steps"),
    (dict(robust_decoder_steps=-1), "robust_decoder_steps"),
    (dict(polish_steps=-1), "polish_steps"),
    (dict(polish_samples=0), "polish_samples"),
    (dict(polish_sampling_steps=0), "polish_sampling_steps"),
    (dict(polish_sampling_steps=5000), "polish_sampling_steps"),
    (dict(polish_draw_batch=0), "polish_draw_batch"),
    (dict(polish_guidances=()), "polish_guidances"),
    (dict(polish_guidances=(7.5, -1.0)), "polish_guidances"),
    (dict(polish_guidances=(1e9,)), "polish_guidances"),
    (dict(unet_warmup=-1), "unet_warmup"),
    (dict(vae_warmup=-10), "vae_warmup"),
    (dict(decoder_warmup=-1), "decoder_warmup"),
    (dict(grad_clip=0.0), "grad_clip"),
    (dict(lr_floor=1.5), "lr_floor"),
    (dict(lr_floor=-0.1), "lr_floor"),
    (dict(snr_gamma=0.0), "snr_gamma"),
    (dict(offset_noise=-0.1), "offset_noise"),
    (dict(latent_noise=-0.3), "latent_noise"),
    (dict(unet_weight_decay=-0.01), "unet_weight_decay"),
    (dict(vae_l1_weight=-1.0), "vae_l1_weight"),
    (dict(vae_kl_weight=-1.0), "vae_kl_weight"),
    (dict(decoder_l1_weight=-1.0), "decoder_l1_weight"),
    (dict(smooth_delta=0.0), "smooth_delta"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed must be a whole number"),
    (dict(unet_steps=2.5), "unet_steps must be a whole number"),
    (dict(unet_steps="100"), "unet_steps must be a whole number"),
    (dict(unet_lr="fast"), "unet_lr must be a number"),
    (dict(unet_batch=True), "unet_batch must be a whole number"),
    (dict(look_strength=float("nan")), "look_strength"),
])
def test_the_recipe_refuses_nonsense(kwargs, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        train.Recipe(**kwargs)


@pytest.mark.parametrize("argv, match", [
    (["--caption-dropout", "5"], "caption_dropout must be from 0 to 1"),
    (["--unet-lr=-1e-4"], "unet_lr must be from"),
    (["--unet-batch", "0"], "unet_batch"),
    (["--ema-decay", "2"], "ema_decay"),
    (["--vae-steps", "-3"], "vae_steps"),
    (["--unet-steps", "0"], "unet_steps"),
    (["--looks-per-scene", "4"], "--polish-steps 0"),
    (["--out", ""], "give a folder's path"),
    (["--export", " "], "give a folder's path"),
    (["--threads", "-1"], "--threads must be 0"),
    (["--unet-steps", "ten"], "invalid int value"),
])
def test_the_training_command_refuses_nonsense_in_one_line(argv, match, capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        train.main(["--out", str(tmp_path / "run"), *argv] if "--out" not in argv else argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err and match in err.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_run_replaces_the_bundled_model_only_when_asked_by_name(tmp_path):
    """A quick try of the command exports into its own folder; the bundled model is the target only by name."""
    from sdcourse import MINI_MODEL_DIR

    args, _ = train.parse_args(["--out", str(tmp_path / "try"), "--unet-steps", "1"])
    assert args.export == tmp_path / "try" / "model"
    args, _ = train.parse_args(["--out", str(tmp_path / "try"), "--export", str(MINI_MODEL_DIR)])
    assert args.export.resolve() == MINI_MODEL_DIR.resolve()


RESUME_FAULTS = {  # (what the folder holds, what is asked now, the sentence's words)
    "another seed": (dict(seed=0), dict(seed=3), "holds a run made with seed=0; this one asks for seed=3"),
    "another UNet width": (dict(unet_width=32), dict(unet_width=16), "unet_width=32; this one asks for unet_width=16"),
    "fewer steps": (dict(unet_steps=500), dict(unet_steps=400), "unet_steps=500; this one asks for unet_steps=400"),
}


@pytest.mark.parametrize("case", RESUME_FAULTS, ids=list(RESUME_FAULTS))
def test_resuming_with_another_recipe_is_refused_in_one_sentence(tmp_path, case):
    was, now, words = RESUME_FAULTS[case]
    train.check_resume(tmp_path, train.Recipe(**was))
    train.check_resume(tmp_path, train.Recipe(**was))  # the same recipe goes on
    with pytest.raises(ValueError, match="Give another folder") as caught:
        train.check_resume(tmp_path, train.Recipe(**now))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_damaged_recipe_record_is_named(tmp_path):
    (tmp_path / "recipe.json").write_text('{"seed": 0,')
    with pytest.raises(ValueError, match=r"recipe.json is damaged .*delete it only if"):
        train.check_resume(tmp_path, train.Recipe())


CHECKPOINT_DAMAGES = {
    "cut short": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "empty": lambda path: path.write_bytes(b""),
    "a text file": lambda path: path.write_text("not a checkpoint"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGES, ids=list(CHECKPOINT_DAMAGES))
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, damage):
    path = tmp_path / "vae.pt"
    train.save_ckpt(path, model={"w": torch.ones(1000)}, step=100)
    assert train.load_ckpt(path, "cpu")["step"] == 100
    CHECKPOINT_DAMAGES[damage](path)
    with pytest.raises(ValueError, match=r"the checkpoint .*vae.pt is damaged .*delete it to run that stage again"):
        train.load_ckpt(path, "cpu")


def test_wide_decoder_trains_a_wider_vae_whose_encoder_learns_the_shipped_latents(tmp_path):
    """scripts/wide_decoder.py: a wider decoder on the shipped encoder's latents, then its own encoder towards
    them; the exported folder loads as tutorials load SD, with the wider VAE and the shipped UNet."""
    from conftest import load_script
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    script = load_script("scripts/wide_decoder.py")
    export = tmp_path / "model"
    args = ["--out", str(tmp_path / "ckpt"), "--clean-steps", "2", "--robust-steps", "1", "--encoder-steps", "3",
            "-n", "4", "--export", str(export), "--threads", "1"]
    script.main(args)
    assert [torch.load(tmp_path / "ckpt" / f"{n}.pt", map_location="cpu")["step"] for n in
            ("clean", "robust", "encoder")] == [2, 1, 3]
    result = json.loads((tmp_path / "ckpt" / "round_trips.json").read_text())
    assert set(result) == {"wide", "shipped", "latent_error"} and set(result["wide"]) == {"flat", "varied"}
    assert result["latent_error"]["flat"]["rms_error"] > 0
    vae = AutoencoderKL.from_pretrained(export, subfolder="vae")
    assert tuple(vae.config.block_out_channels) == script.WIDE["block_out_channels"]
    assert vae.config.scaling_factor == 0.18215 and vae.dtype == torch.float32
    shipped = UNet2DConditionModel.from_pretrained(sdcourse.MINI_MODEL_DIR, subfolder="unet")
    unet = UNet2DConditionModel.from_pretrained(export, subfolder="unet")
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), unet.state_dict().values()))
    pipe = StableDiffusionPipeline.from_pretrained(export)
    assert pipe("a red circle", num_inference_steps=2, output_type="np").images.shape == (1, 64, 64, 3)
    log = (tmp_path / "ckpt" / "train.log").read_text()
    script.main(args)  # a rerun resumes: every stage is already trained
    rerun = (tmp_path / "ckpt" / "train.log").read_text()[len(log):]
    assert all(f"{n} already trained" in rerun for n in ("clean", "robust", "encoder")), rerun


def test_latent_probe_reads_the_shape_off_the_latents(capsys):
    """scripts/latent_probe.py: a classifier on the VAE's latents, read on held-out scenes, by world and size."""
    from conftest import load_script

    load_script("scripts/latent_probe.py").main(["--steps", "3", "--looks", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "3024 training latents (1512 scenes, flat and 1 varied renders each); 168 held-out scenes" in out
    for world in ("flat", "varied"):
        line = next(l for l in out.splitlines() if l.startswith(f"{world} renders: shape read from the latents"))
        assert "small" in line and "large" in line


def test_a_wider_vae_and_flat_renders_in_a_varied_world(tmp_path):
    """--vae-width / --vae-layers build a wider AutoencoderKL (x8, 4 latent channels still); --flat-share mixes flat
    renders into a varied world's VAE batches, and a recipe without it draws its batches as before."""
    import random

    r = train.Recipe(looks_per_scene=1, flat_share=1.0, polish_steps=0)
    scenes = shapes.all_scenes()[:50]
    flat = train.world_batch(random.Random(0), scenes, 6, r)
    picks = random.Random(0).choices(scenes, k=6)
    assert torch.equal(flat, train.scenes_tensor(picks))
    varied = train.world_batch(random.Random(0), scenes, 6, replace(r, flat_share=0.0))
    assert not torch.equal(varied, flat)
    assert torch.equal(varied, train.world_batch(random.Random(0), scenes, 6, train.Recipe(looks_per_scene=1,
                                                                                            polish_steps=0)))
    wide = replace(r, vae_width=24, vae_layers=2, vae_steps=1, subject_weight=4.0, flat_share=0.5)
    vae = train.train_vae(tmp_path, wide, "cpu")
    assert tuple(vae.config.block_out_channels) == (24, 48, 96, 96) and vae.config.layers_per_block == 2
    assert vae.config.latent_channels == 4 and vae.encode(flat[:1]).latent_dist.mean.shape == (1, 4, 8, 8)
    with pytest.raises(ValueError, match="vae_width must be even"):
        train.Recipe(vae_width=17)
    # scripts/save_vae_stage.py keeps the stage's weights as a diffusers folder in float16, and reads them
    from conftest import load_script
    from diffusers import AutoencoderKL
    from safetensors import safe_open

    (tmp_path / "recipe.json").write_text(json.dumps(asdict(wide)))
    load_script("scripts/save_vae_stage.py").main([str(tmp_path / "vae.pt"), str(tmp_path / "stage1"), "-n", "4"])
    with safe_open(tmp_path / "stage1" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    saved = AutoencoderKL.from_pretrained(tmp_path / "stage1")
    assert tuple(saved.config.block_out_channels) == (24, 48, 96, 96) and saved.dtype == torch.float32
    assert torch.allclose(saved.decoder.conv_out.weight, vae.decoder.conv_out.weight.half().float())
    record = json.loads((tmp_path / "stage1" / "round_trips.json").read_text())
    assert record["step"] == 1 and set(record["flat"]) >= {"colour", "shape"}
