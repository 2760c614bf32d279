"""sdcourse.speed: timing, machine description, results files."""
import pytest

from sdcourse.speed import (load_results, machine_info, markdown_table, median, results_dir, time_call,
                            write_results)


def test_time_call_counts_runs_and_warmup():
    calls = []
    times = time_call(lambda: calls.append(1), repeats=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6 and all(t >= 0 for t in times)


@pytest.mark.parametrize("kwargs,match", [
    (dict(repeats=0), "repeats must be a whole number >= 1, got 0"),
    (dict(warmup=-1), "warmup must be a whole number >= 0, got -1"),
    (dict(repeats=2.0), "repeats must be a whole number >= 1, got 2.0"),
])
def test_time_call_bad_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        time_call(lambda: None, **kwargs)


def test_time_call_needs_a_function():
    with pytest.raises(TypeError, match="fn must be a function taking no arguments, got int"):
        time_call(3)


def test_median():
    assert median([3.0, 1.0, 100.0]) == 3.0
    with pytest.raises(ValueError, match="empty list"):
        median([])


def test_machine_info_names_cpu_gpu_versions_and_date():
    info = machine_info("cpu")
    assert info["gpu"] == "no GPU"
    assert info["cpu_cores"] >= 1 and info["cpu"]
    for key in ("torch", "diffusers", "transformers", "date", "concurrent_jobs"):
        assert key in info
    assert info["date"].endswith("UTC")


def test_markdown_table():
    text = markdown_table([{"a": 1, "b": None}, {"a": "x"}], ["a", "b"])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 |  |", "| x |  |"]
    with pytest.raises(ValueError, match="at least one column"):
        markdown_table([], [])


def test_results_round_trip(tmp_path):
    json_path, md_path = write_results("demo", {"x": [1, 2]}, "# demo\n", tmp_path)
    assert json_path.name == "demo.json" and md_path.read_text() == "# demo\n"
    assert load_results("demo", tmp_path) == {"x": [1, 2]}
    assert load_results("missing", tmp_path) is None


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", 3])
def test_results_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="plain file stem"):
        write_results(name, {}, "", tmp_path)


def test_results_dir_is_the_checkout_benchmarks_folder():
    assert results_dir().parts[-2:] == ("benchmarks", "results")
