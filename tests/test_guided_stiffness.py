"""scripts/guided_stiffness.py: the largest stretch of the guided model's Jacobian along a sampler's path."""
import conftest
import pytest
import torch

stiffness = conftest.load_script("scripts/guided_stiffness.py")


def test_power_iteration_finds_each_items_largest_stretch():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    tops = (4.0, 0.5)
    mats = [q @ torch.diag(torch.cat([torch.tensor([top]), torch.linspace(0.05, 0.3, 15)])) @ q.T for top in tops]

    def f(x):  # item i of the batch is stretched by its own matrix
        return torch.stack([(m @ xi.flatten()).view(xi.shape) for m, xi in zip(mats, x)])

    found = stiffness.top_stretch(f, torch.randn(2, 1, 4, 4, generator=g), iters=30, gen=g)
    assert found.tolist() == pytest.approx(list(tops), rel=1e-3)


def test_the_mini_model_is_measured_along_its_path_and_guidance_stretches_it_more(capsys):
    rows = stiffness.main(["-n", "2", "--steps", "6"])
    out = capsys.readouterr().out
    assert rows and "guidance 7.5" in out and len(out.splitlines()) == len(rows) + 2
    for i, s, ds, one, guided in rows:
        assert 0.2 <= s <= 6 and ds > 0 and one.shape == guided.shape == (2,)
    assert max(float(g.max()) for *_, g in rows) > max(float(o.max()) for *_, o, _ in rows)


def test_bad_arguments_are_refused_in_one_line():
    with pytest.raises(SystemExit):
        stiffness.main(["-n", "0"])
