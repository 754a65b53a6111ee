"""The package as `pip install` sees it: one dependency list (pyproject.toml) that the requirements
files install from, console scripts that run from any folder, and the shipped configs found by
name, installed or not."""

import os
import pathlib
import subprocess
import sys
import tomllib

import pytest
import setuptools

from icnet_jax import config_files, console
from tests import scripts

PYPROJECT = tomllib.loads((scripts.REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
# A flag each script's --help lists: its own, not only absl's.
OWN_FLAG = {
    "icnet-train": "--workdir",
    "icnet-evaluate": "--workdir",
    "icnet-predict": "--checkpoint",
    "icnet-benchmark": "--models",
    "icnet-export": "--formats",
    "icnet-convert-weights": "--num_classes",
    "icnet-prune": "--keep",
}


def _requirements(name: str) -> list[str]:
    lines = (scripts.REPO / name).read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_the_requirements_files_install_the_package_with_its_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert _requirements("requirements.txt") == ["-e .[test]"]
    for extra in ("export", "pretrained", "cityscapes"):
        assert _requirements(f"requirements-{extra}.txt") == [f"-e .[{extra}]"]
        assert extras[extra]
    assert {"pytest", "import-linter", "ruff", "mypy"} <= {
        requirement.split(">")[0].split("=")[0] for requirement in extras["test"]
    }


def test_every_console_script_has_its_entry_function():
    assert set(SCRIPTS) == set(OWN_FLAG)
    for target in SCRIPTS.values():
        module, function = target.split(":")
        assert module == "icnet_jax.console" and callable(getattr(console, function))


def test_a_built_package_holds_the_configs_and_the_entry_scripts():
    packages = setuptools.find_packages(str(scripts.REPO), include=["icnet_jax*"])
    assert {"icnet_jax.configs", "icnet_jax.scripts"} <= set(packages)
    for name in ("train", "evaluate", "predict", "benchmark"):
        command_line = scripts.REPO / "icnet_jax" / "scripts" / f"{name}.py"
        assert command_line.is_file() and not command_line.is_symlink()
        assert f"console.{name}()" in (scripts.REPO / f"{name}.py").read_text()


def test_shipped_configs_are_found_by_name_and_by_path(tmp_path, monkeypatch):
    assert config_files.names() == ["camvid", "cityscapes", "coco_stuff", "custom", "quickstart"]
    shipped = config_files.SHIPPED
    assert config_files.resolve("camvid:cpu") == f"{shipped / 'camvid.py'}:cpu"
    assert config_files.resolve("quickstart") == str(shipped / "quickstart.py")
    mine = tmp_path / "mine.py"
    mine.write_text("")
    assert config_files.resolve(str(mine)) == str(mine)  # the user's own file
    assert config_files.resolve("no_such_config") == "no_such_config"  # its own error later
    monkeypatch.chdir(tmp_path)  # away from the clone: `configs/NAME.py` is the shipped one
    assert config_files.resolve("configs/camvid.py:cpu") == f"{shipped / 'camvid.py'}:cpu"


def _from_elsewhere(tmp_path: pathlib.Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """`python -c code *args` in a folder outside the clone, the package importable."""
    env = {**scripts.ENV, "PYTHONPATH": str(scripts.REPO), "JAX_PLATFORMS": "cpu"}
    return scripts.run("-c", code, *args, cwd=tmp_path, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(OWN_FLAG))
def test_each_console_script_answers_help_from_another_folder(tmp_path, script):
    module, function = SCRIPTS[script].split(":")
    code = f"import sys; sys.argv[0] = {script!r}; import {module}; {module}.{function}()"
    done = _from_elsewhere(tmp_path, code, "--help")
    assert done.returncode in (0, 1), done.stderr  # absl's --help ends with status 1
    assert "Traceback" not in done.stdout + done.stderr
    assert OWN_FLAG[script] in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_train_reads_a_shipped_config_by_name_from_another_folder(tmp_path):
    code = "from icnet_jax import console; console.train()"
    done = _from_elsewhere(tmp_path, code, "--config=camvid:cpu", "--config.num_steps=-1")
    line = scripts.one_error_line(done)  # the config loaded, then its field was checked
    assert "--config.num_steps=-1" in line, line
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_installed_console_scripts_are_this_checkout_s():
    """Where the environment has the package installed (`pip install -e .`), its scripts run this
    checkout's entry points; otherwise there is nothing to check."""
    bin_dir = pathlib.Path(sys.executable).parent
    installed = [bin_dir / name for name in SCRIPTS if (bin_dir / name).exists()]
    if not installed:
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    for path in installed:
        assert "icnet_jax.console" in path.read_text(), path
    assert os.access(installed[0], os.X_OK)
