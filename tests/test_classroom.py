"""Chapter 13's training run: the shipped model's own stage 5 (sdcourse.mini.train) with Recipe.classroom().

The run is reproducible on the CPU: two runs of one seed give the same weights and losses to the bit, another
seed gives others. The pieces the chapter shows one by one (the schedule, the batch, caption dropout, the
loss) are the ones train_unet calls, and they do what the chapter says they do.
"""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdcourse import classroom, shapes
from sdcourse.mini import train

ROOT = Path(__file__).resolve().parents[1]
STEPS = 200  # a few hundred steps of the preset: about 45 s on 2 CPU cores, enough for the loss to fall
SHORT = 40  # the runs compared with each other: every part of a run (warm-up, cosine, EMA, snapshot) in fewer steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    def one(seed, name, steps, **changes):
        return classroom.train(train.Recipe.classroom(unet_steps=steps, seed=seed, **changes),
                               tmp_path_factory.mktemp(name), sample_every=10**6, n_eval=4, live=False, device="cpu")

    # the long run, then two short ones of the same seed and one of another (warm-up 10 of their 40 steps)
    short = dict(steps=SHORT, unet_warmup=10)
    return one(0, "long", STEPS), one(0, "a", **short), one(0, "b", **short), one(1, "c", **short)


def test_the_same_seed_trains_the_same_weights_and_losses_to_the_bit(runs):
    _, first, again, _ = runs
    assert len(first.losses) == SHORT
    assert first.losses == again.losses
    a, b = first.unet_weights(), again.unet_weights()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s.step for s in first.snapshots] == [s.step for s in again.snapshots] == [SHORT]
    assert first.snapshots[0].accuracy == again.snapshots[0].accuracy


def test_another_seed_trains_other_weights_and_losses(runs):
    _, first, _, other = runs
    assert first.losses != other.losses
    a, c = first.unet_weights(), other.unet_weights()
    assert sum(not torch.equal(a[k], c[k]) for k in a) == len(a)  # every tensor differs


def test_the_loss_falls_and_the_run_ends_with_a_snapshot(runs):
    first = runs[0]
    start, end = sum(first.losses[:50]) / 50, sum(first.losses[-50:]) / 50
    assert end < 0.7 * start, (start, end)
    assert [s.step for s in first.snapshots] == [STEPS]
    assert set(first.snapshots[0].accuracy) == set(shapes.ATTRIBUTES) and len(first.snapshots[0].images) == 4
    assert first.scaling == pytest.approx(0.18215, rel=1e-3)  # the bundled VAE's folded scale, measured
    assert (first.out / "unet.pt").exists()


def test_only_the_unet_learns_and_the_frozen_parts_stay_the_bundled_ones(runs):
    vae, text_encoder = train.frozen_parts("bundled")
    pipe = runs[0].pipe
    for mine, bundled in ((pipe.text_encoder, text_encoder), (pipe.vae, vae)):
        theirs = bundled.state_dict()
        assert all(torch.equal(v, theirs[k]) for k, v in mine.state_dict().items())
    assert sum(p.numel() for p in pipe.unet.parameters()) > 10**6  # a whole new UNet, not a few layers


def test_a_finished_run_or_another_recipe_in_its_folder_is_refused_in_one_sentence(runs):
    first = runs[0]
    with pytest.raises(ValueError, match="already holds this recipe's finished run"):
        classroom.train(first.recipe, first.out, sample_every=10**6, n_eval=4, live=False, device="cpu")
    with pytest.raises(ValueError, match=r"holds a run made with seed=0; this one asks for seed=3"):
        classroom.train(train.Recipe.classroom(unet_steps=STEPS, seed=3), first.out, live=False, device="cpu")


def test_ctrl_c_saves_a_checkpoint_at_the_end_of_the_step_and_a_rerun_goes_on(tmp_path):
    import signal

    recipe = train.Recipe.classroom(unet_steps=20, seed=5)
    vae, text_encoder = train.frozen_parts(recipe.frozen_from, "cpu")
    mean, std, scaling, scene_of = classroom.frozen_latents(vae, "cpu", recipe)
    steps = []

    def press_ctrl_c(step, loss, ema_models):
        steps.append(step)
        if step == 8:
            signal.raise_signal(signal.SIGINT)  # as the notebook's interrupt button does

    def run():
        return train.train_unet(tmp_path, recipe, mean, std, scaling, "cpu", scene_of, text_encoder=text_encoder,
                                on_step=press_ctrl_c)

    with pytest.raises(KeyboardInterrupt, match="interrupted at step 8"):
        run()
    assert steps == list(range(1, 9)) and train.load_ckpt(tmp_path / "unet.pt", "cpu")["step"] == 8
    steps.clear()
    run()
    assert steps == list(range(9, 21))  # the rerun goes on from the checkpoint


def test_a_damaged_checkpoint_is_named(tmp_path):
    recipe = train.Recipe.classroom(unet_steps=20, seed=5)
    (tmp_path / "unet.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=r"the checkpoint .*unet.pt is damaged .*delete it"):
        classroom.train(recipe, tmp_path, live=False, device="cpu")


def test_the_batch_is_the_forward_process_of_sds_schedule():
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, for every picture of the batch."""
    r = train.Recipe.classroom(unet_batch=16)
    schedule = train.noise_schedule(r)
    assert len(schedule.alphas_cumprod) == 1000
    assert schedule.alphas_cumprod[0] > 0.999 and schedule.alphas_cumprod[-1] < 0.005
    mean, std = torch.randn(shapes_count(), 4, 8, 8), torch.full((shapes_count(), 4, 8, 8), 0.01)
    pool = train.latent_pool(mean, std, 0.5)
    batch = train.unet_batch(random.Random(0), torch.Generator().manual_seed(0), pool, r, schedule)
    ab = schedule.alphas_cumprod[batch.t].view(-1, 1, 1, 1)
    assert torch.allclose(batch.xt, ab.sqrt() * batch.x0 + (1 - ab).sqrt() * batch.noise, atol=1e-6)
    assert batch.x0.shape == (16, 4, 8, 8) and len(batch.captions) == 16
    held = {s.caption() for s in shapes.split_scenes()[1]}
    assert not held & set(batch.captions)  # held-out scenes are never trained on


def shapes_count():
    return len(shapes.all_scenes())


def test_caption_dropout_empties_that_share_of_captions():
    scenes = shapes.all_scenes()[:1] * 4000
    for p in (0.0, 0.1, 0.5, 1.0):
        captions = train.batch_captions(scenes, random.Random(0), train.Recipe(caption_dropout=p))
        share = sum(c == "" for c in captions) / len(captions)
        assert share == pytest.approx(p, abs=0.02), p
        assert all(c == "" or "circle" in c or "square" in c or "triangle" in c for c in captions)


def test_the_loss_is_the_min_snr_weighted_squared_error_of_the_noise():
    schedule = train.noise_schedule()
    pred, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    expected = sum(((pred[i] - noise[i]) ** 2).mean() * schedule.loss_weight[t[i]] for i in range(3)) / 3
    assert torch.allclose(train.denoising_loss(pred, noise, t, schedule.loss_weight), expected)
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    assert torch.allclose(schedule.loss_weight, torch.clamp(snr, max=5.0) / snr)
    assert torch.equal(train.denoising_loss(noise, noise, t, schedule.loss_weight), torch.tensor(0.0))


def test_the_command_line_runs_the_same_preset_and_exports_a_pipeline_folder(tmp_path):
    out, export = tmp_path / "run", tmp_path / "run" / "model"
    cmd = [sys.executable, "-m", "sdcourse.mini.train", "--preset", "classroom", "--unet-steps", "3", "--out",
           str(out), "--threads", "2"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    record = json.loads((export / "train_info.json").read_text())
    assert record["frozen_from"] == "bundled" and record["unet_steps"] == 3
    assert record["unet_width"] == train.Recipe.classroom().unet_width
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(export)
    assert pipe.vae.config.scaling_factor == 0.18215 and pipe.unet.dtype == torch.float32
    image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_the_preset_is_the_command_lines_default_and_options_change_single_settings():
    _, recipe = train.parse_args(["--preset", "classroom", "--unet-steps", "300", "--seed", "4"])
    assert recipe == train.Recipe.classroom(unet_steps=300, seed=4)
    _, shipped = train.parse_args([])
    assert shipped == train.Recipe()


@pytest.mark.parametrize("kwargs, match", [
    (dict(unet_width=12), "multiple of 8"),
    (dict(looks_per_scene=2), "flat renders"),
    (dict(polish_steps=5), "flat renders"),
    (dict(frozen_from=3), "frozen_from must be"),
])
def test_bad_classroom_recipes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.Recipe.classroom(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: classroom.train("classroom", live=False), "must be a sdcourse.mini.train.Recipe"),
    (lambda: classroom.train(train.Recipe(), live=False), "frozen_from"),
    (lambda: classroom.train(sample_every=0, live=False), "sample_every"),
    (lambda: classroom.train(n_eval=-1, live=False), "n_eval"),
    (lambda: classroom.train(train.Recipe.classroom(frozen_from="/nowhere"), live=False), "frozen_from must be"),
    (lambda: classroom.smooth([1, 2], window=0), "window"),
])
def test_bad_arguments_are_refused_in_one_sentence(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def test_a_classroom_run_exports_beside_its_checkpoints_and_never_over_the_bundled_model(tmp_path, capsys):
    args, _ = train.parse_args(["--preset", "classroom", "--out", str(tmp_path / "run")])
    assert args.export == tmp_path / "run" / "model"
    args, _ = train.parse_args(["--out", str(tmp_path / "run")])
    assert args.export == tmp_path / "run" / "model"  # the full recipe too, unless --export names the bundled model
    with pytest.raises(SystemExit):
        train.parse_args(["--preset", "classroom", "--export", str(train.MINI_MODEL_DIR)])
    assert "elsewhere than sdcourse/mini_model/" in capsys.readouterr().err


def test_the_command_line_refuses_a_missing_frozen_folder_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--preset", "classroom", "--frozen-from", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert "frozen_from" in err[-1] and "Traceback" not in "\n".join(err)
