"""pyproject.toml and environment.yml list the same packages with the same version ranges.

Both spell one list: pip's in pyproject.toml (dependencies + the `dev` extra), conda's in
environment.yml (conda packages + a pip section). open-clip-torch sits outside both lists on
purpose and is installed with --no-deps; both files name it on a `no-deps` line.
"""
import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10 has no tomllib; tomli is the same parser
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
NOT_PACKAGES = {"python", "pip"}  # conda's interpreter and installer, not dependencies of the course


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_requirements():
    project = pyproject()["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {canonicalize_name(r.name): r.specifier for r in map(Requirement, lines)}


def conda_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for entry in env["dependencies"]:
        lines = entry["pip"] if isinstance(entry, dict) else [entry]
        for line in lines:
            if line.startswith("-"):  # pip options such as `-e .`
                continue
            name, spec = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", line).groups()
            if name not in NOT_PACKAGES:
                found[canonicalize_name(name)] = SpecifierSet(spec.replace(" ", ""))
    return found


def test_same_packages():
    pip, conda = pip_requirements(), conda_requirements()
    assert sorted(pip) == sorted(conda), (
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}"
    )


def test_same_version_ranges():
    pip, conda = pip_requirements(), conda_requirements()
    different = {name: (str(pip[name]), str(conda[name])) for name in pip if name in conda and pip[name] != conda[name]}
    assert not different, f"(pyproject, environment.yml) ranges differ: {different}"


def test_every_package_has_a_range():
    assert all(str(spec) for spec in pip_requirements().values())


def test_no_deps_packages_agree():
    from_pyproject = pyproject()["tool"]["sdcourse"]["no-deps"]
    from_conda = re.findall(r"^# no-deps: (.+)$", (ROOT / "environment.yml").read_text(), re.M)
    assert [line.strip() for line in from_conda] == [" ".join(from_pyproject)]
    assert from_pyproject == ["open-clip-torch==3.3.0"]
    assert "open-clip-torch" not in pip_requirements()  # listed, it would pull torchvision


def test_installed_versions_are_in_range():
    """The environment the tests run in is one the ranges allow (so the ranges are tested ones)."""
    outside = {}
    for name, spec in pip_requirements().items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} is listed in pyproject.toml but not installed; run bash scripts/setup_env.sh")
        if not spec.contains(version, prereleases=True):
            outside[name] = (version, str(spec))
    assert not outside, f"installed versions outside the listed ranges: {outside}"


def test_setup_script_installs_the_no_deps_package_without_dependencies():
    script = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert "--no-deps" in script and "no-deps" in script
