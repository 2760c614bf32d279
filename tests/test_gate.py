"""The ship gate's parts (the whole gate draws about a thousand pictures; the model card records its output)."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import sdcourse
from sdcourse.mini import evaluate as ev
from sdcourse.mini import gate


def _flat(value):
    return Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8))


def test_mean_pairwise_difference_and_frame_jumps():
    assert gate.mean_pairwise_difference([_flat(0), _flat(6), _flat(12)]) == pytest.approx((6 + 12 + 6) / 3)
    assert gate.frame_jumps([_flat(0), _flat(3), _flat(3), _flat(13)]) == [3.0, 0.0, 10.0]
    with pytest.raises(ValueError, match="at least 2"):
        gate.mean_pairwise_difference([_flat(0)])


def test_folder_checks_pass_on_the_shipped_folder():
    lines = gate.folder_checks(sdcourse.MINI_MODEL_DIR)
    assert len(lines) == 5 and all(ok for ok, _ in lines), lines
    assert any("'a red circle' -> [49406, 320, 736, 7117, 49407]" in text for _, text in lines)


def test_folder_checks_fail_a_folder_with_another_scaling_factor(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(sdcourse.MINI_MODEL_DIR, folder)
    cfg_path = folder / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["scaling_factor"] = 0.39
    cfg_path.write_text(json.dumps(cfg))
    failed = [text for ok, text in gate.folder_checks(folder) if not ok]
    assert failed == ["FAIL folder: VAE scaling factor 0.39"]


def test_seed_checks_measure_what_they_print():
    pipe = sdcourse.load_pipeline("mini", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    lines, numbers = gate.seed_checks(pipe, n_captions=2, steps=4)
    assert len(lines) == 4 and all(text.startswith(("PASS ", "FAIL ")) for _, text in lines)
    assert [ok for ok, _ in lines] == [numbers["spread"] >= 6, numbers["read_right"] >= 0.9,
                                       len(numbers["short_backgrounds"]) >= 3, numbers["walk_ratio"] <= 4]
    assert len(numbers["spreads"]) == 2 and len(numbers["walk_jumps"]) == gate.WALK_FRAMES - 1
    assert numbers["walk_ratio"] == pytest.approx(max(numbers["walk_jumps"]) / np.median(numbers["walk_jumps"]))


def test_vae_checks_read_the_round_trips_of_both_worlds():
    pipe = sdcourse.load_pipeline("mini", device="cpu")
    lines, numbers = gate.vae_checks(pipe, n=24)
    assert set(numbers) == {"flat", "varied"} and len(lines) == 2
    for (ok, text), world in zip(lines, ("flat", "varied")):
        assert ok == (numbers[world]["shape"] >= gate.VAE_SHAPE_LEAST)
        assert f"round trips of {world} renders read the shape right {100 * numbers[world]['shape']:.1f}%" in text
    assert numbers["flat"] == ev.vae_round_trip(pipe, 24)


def test_the_gate_holds_the_targets_for_version_2():
    assert gate.SAMPLER_GATE[("klms", 50)]["shape"] == gate.SAMPLER_GATE[("pndm", 50)]["shape"] == 0.80
    assert gate.SAMPLER_GATE[("klms", 30)] == {"colour": 0.80, "shape": 0.75}
    assert gate.SAMPLER_GATE[("ddim", 20)]["shape"] == 0.85 and ("klms", 20) not in gate.SAMPLER_GATE
    assert gate.VAE_SHAPE_LEAST == 0.90


def test_the_verdict_needs_every_check(monkeypatch):
    monkeypatch.setattr(gate, "sampler_checks", lambda *a, **k: ([(True, "PASS a")], {}, {}))
    monkeypatch.setattr(gate, "vae_checks", lambda *a, **k: ([], {}))
    monkeypatch.setattr(gate, "seed_checks", lambda *a, **k: ([(True, "PASS b"), (False, "FAIL c")], {}))
    passed, lines, *_ = gate.run_gate(None, None, speed=False)
    assert not passed and lines == ["PASS a", "PASS b", "FAIL c", "ship gate: FAIL (2 of 3 checks)"]
    monkeypatch.setattr(gate, "seed_checks", lambda *a, **k: ([(True, "PASS b")], {}))
    assert gate.run_gate(None, None, speed=False)[:2] == (True, ["PASS a", "PASS b", "ship gate: PASS (2 of 2 checks)"])
    with pytest.raises(ValueError, match="at least 64 held-out captions"):
        gate.run_gate(None, None, n=32)


def test_gate_command_refuses_too_few_captions(capsys):
    with pytest.raises(SystemExit):
        ev.main(["--gate", "-n", "32"])
    assert "--gate needs -n 64 or more" in capsys.readouterr().err


def test_gate_command_prints_the_lines_writes_numbers_and_grid_and_exits_1_on_a_fail(tmp_path, monkeypatch, capsys):
    pictures = {"klms 50": ([_flat(0).resize((64, 64))] * 2, ["a red circle", "a blue square"])}
    monkeypatch.setattr(gate, "run_gate", lambda *a, **k: (False, ["PASS x", "FAIL y", "ship gate: FAIL (1 of 2 checks)"],
                                                           {"samplers": {"klms 50": {"colour": 0.5}}}, pictures))
    code = ev.main(["--gate", "--json", str(tmp_path / "gate.json"), "--grid", str(tmp_path / "grid.png")])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL y\nship gate: FAIL (1 of 2 checks)" in out
    numbers = json.loads((tmp_path / "gate.json").read_text())
    assert numbers["samplers"]["klms 50"]["colour"] == 0.5
    assert Image.open(tmp_path / "grid.png").size == (8 * 128, 128 + 34)  # one row of 8 cells, pictures drawn 2x
