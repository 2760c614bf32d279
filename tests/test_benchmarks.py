"""The benchmark scripts (benchmarks/*.py): full-size configs, FLOP counting, and the CPU-runnable paths."""
import json

import pytest
import torch

import conftest



def load_script(name):
    return conftest.load_script(f"benchmarks/{name}.py")


@pytest.fixture(scope="module")
def gpu_bench():
    return load_script("bench_gpu_fullsize")


@pytest.fixture(scope="module")
def meta_models(gpu_bench):
    return gpu_bench.build_models("meta")


def test_full_size_parameter_counts_match_sd_v1(gpu_bench, meta_models):
    counts = {name: gpu_bench.count_parameters(m) for name, m in meta_models.items()}
    assert counts == gpu_bench.EXPECTED_PARAMS
    # the rounded sizes everyone quotes for SD v1.x: UNet 860M, VAE 84M, CLIP text encoder 123M
    assert [round(counts[k] / 1e6) for k in ("unet", "vae", "text_encoder")] == [860, 84, 123]


def test_full_size_configs_are_sd_v1_shapes(meta_models):
    unet, vae, text = meta_models["unet"], meta_models["vae"], meta_models["text_encoder"]
    assert unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == 512
    assert unet.config.cross_attention_dim == text.config.hidden_size == 768
    assert text.config.max_position_embeddings == 77 and text.config.num_hidden_layers == 12
    assert vae.config.latent_channels == unet.config.in_channels == 4


def test_guided_step_flops_on_the_meta_device(gpu_bench, meta_models):
    one = gpu_bench.guided_step_flops(meta_models["unet"], batch=1)
    two = gpu_bench.guided_step_flops(meta_models["unet"], batch=2)
    assert 1.5e12 < one < 1.7e12  # about 1.6 TFLOP for the two latents of one guided step
    assert two == pytest.approx(2 * one, rel=1e-3)  # linear in the batch


def test_gpu_benchmark_exits_clearly_without_cuda(gpu_bench):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        gpu_bench.main(["--batches", "1"])


def test_gpu_benchmark_refuses_too_few_repeats(gpu_bench, capsys):
    with pytest.raises(SystemExit):
        gpu_bench.main(["--repeats", "1"])
    assert "--repeats must be at least 3" in capsys.readouterr().err


def test_smoke_mode_never_writes_the_real_results(gpu_bench, capsys):
    with pytest.raises(SystemExit):
        gpu_bench.main(["--smoke-cpu"])
    assert "--smoke-cpu writes only to a folder you name with --out" in capsys.readouterr().err


def test_count_only_writes_a_not_yet_recorded_file(gpu_bench, tmp_path):
    data = gpu_bench.main(["--count-only", "--out", str(tmp_path)])
    assert data["recorded"] is False
    md = (tmp_path / "gpu_fullsize.md").read_text()
    assert "not yet recorded" in md and "random weights" in md
    assert json.loads((tmp_path / "gpu_fullsize.json").read_text())["counts"]["parameters"]["unet"] == 859_520_964


def test_smoke_run_on_cpu_exercises_every_row(gpu_bench, tmp_path):
    data = gpu_bench.main(["--smoke-cpu", "--steps", "2", "--batches", "1", "--out", str(tmp_path)])
    labels = [r["row"] for r in data["rows"]]
    assert labels[:3] == ["diffusers pipeline as shipped", "course's hand-built loop (sdcourse.loop.denoise)",
                          "fast loop, eager (reference)"]
    assert any(label.startswith("DPM-Solver++") for label in labels)
    for row in data["rows"]:
        assert row["finite"] and row["rel_err"] <= 1e-3 and row["peak_gib"] is None
    assert data["recorded"] is False and data["smoke_cpu"] is True
    assert "NOT GPU figures" in (tmp_path / "gpu_fullsize.md").read_text()


def test_cpu_benchmark_writes_results_naming_the_machine(tmp_path):
    bench = load_script("bench_cpu_mini")
    data = bench.main(["--schedulers", "euler", "ddim", "--steps", "2", "--loop-steps", "2", "--repeats", "1",
                       "--out", str(tmp_path), "--name", "smoke"])
    assert [r["scheduler"] for r in data["schedulers"]] == ["euler", "ddim"]
    assert data["fast_loop_rel_err"] <= 1e-3
    md = (tmp_path / "smoke.md").read_text()
    assert "no GPU" in md and data["machine"]["cpu"] in md and "torch " in md
    assert json.loads((tmp_path / "smoke.json").read_text())["settings"]["steps"] == [2]


def test_floor_and_goals_use_the_fastest_finite_klms_row(gpu_bench):
    rows = [
        {"row": "slow", "batch": 1, "steps": 50, "s_per_image": 2.0, "peak_gib": 2.5, "finite": True},
        {"row": "fast", "batch": 1, "steps": 50, "s_per_image": 0.2, "peak_gib": 2.9, "finite": True},
        {"row": "broken", "batch": 1, "steps": 50, "s_per_image": 0.01, "peak_gib": 1.0, "finite": False},
        {"row": "dpm", "batch": 1, "steps": 20, "s_per_image": 0.1, "peak_gib": 2.0, "finite": True},
        {"row": "fast", "batch": 8, "steps": 50, "s_per_image": 0.15, "peak_gib": 9.0, "finite": True},
    ]
    floor = gpu_bench.floor_summary(rows, flops_step=10**12, tflops=500.0, steps=50)
    assert floor["floor_s_per_image"] == 0.1
    assert floor["best"]["1"] == {"row": "fast", "s_per_image": 0.2, "x_floor": 2.0}
    goals = gpu_bench.goals_check(rows, steps=50)
    assert goals["batch1_s"]["met"] is True and goals["batch1_s"]["row"] == "fast"
    assert goals["batch8_s"]["met"] is False and goals["batch1_peak_gib"]["measured"] == 2.9
