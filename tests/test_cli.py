"""What a user meets in the first week around runs, tools and signals: a resume past the schedule,
tool outputs that cannot be written, SIGTERM, config files that raise, workdirs that cannot be
created. Each is one `error:` line (or the right result) and nothing written."""

import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from icnet_jax import cli
from tests.scripts import ENV, REPO, one_error_line, run

TINY_DATA = [
    "--config.dataset.builder_kwargs.num_train=4",
    "--config.dataset.builder_kwargs.num_val=2",
    "--config.dataset.builder_kwargs.height=33",
    "--config.dataset.builder_kwargs.width=65",
]


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


# --- A resume at or past config.num_steps -------------------------------------------------------


def test_a_resume_at_or_past_num_steps_says_so_and_writes_nothing(tmp_path, tiny_checkpoint):
    workdir = shutil.copytree(tiny_checkpoint[0], tmp_path / "run")  # a checkpoint at step 7
    before = snapshot(workdir)
    for num_steps in (4, 7):
        done = run(
            "train.py",
            f"--workdir={workdir}",
            f"--config.num_steps={num_steps}",
            f"--config.dataset.data_dir={tmp_path / 'tfds'}",
            # The checkpoint's own input settings: a resume with others is refused first.
            "--config.input.bgr=False",
            "--config.input.mean=(0., 0., 0.)",
            *TINY_DATA,
        )
        assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
        assert "at step 7" in done.stdout and f"num_steps={num_steps}" in done.stdout
        assert "nothing to train" in done.stdout and "raise --config.num_steps" in done.stdout
        assert "resuming" not in done.stdout
        # No metrics relabel the step-7 weights with another step; nothing else changes.
        assert snapshot(workdir) == before


# --- Tool outputs checked before any work -------------------------------------------------------

TOOLS = {
    "convert_weights": ["--input={checkpoint}"],
    "prune": ["--checkpoint={checkpoint}"],
    "export": ["--checkpoint={checkpoint}", "--size=33,65"],
}
# Runs a tool as `python -m` does; as root, where a read-only folder is still writable, the
# folder named by READ_ONLY is made to look read-only to the writability check (os.access).
TOOL = """
import os, runpy, sys
read_only = os.environ.get("READ_ONLY")
if read_only and os.geteuid() == 0:
    real = os.access
    def access(path, mode, **kwargs):
        if mode & os.W_OK and os.path.abspath(path).startswith(read_only):
            return False
        return real(path, mode, **kwargs)
    os.access = access
tool = sys.argv[1]
sys.argv = [tool, *sys.argv[2:]]
runpy.run_module("icnet_jax.tools." + tool, run_name="__main__")
"""


@pytest.mark.parametrize("tool", list(TOOLS))
def test_a_tool_output_under_a_file_is_refused_before_any_work(tool, tmp_path, tiny_checkpoint):
    file = tmp_path / "a_file"
    file.write_text("")
    args = [a.format(checkpoint=tiny_checkpoint[0]) for a in TOOLS[tool]]
    error = one_error_line(run("-c", TOOL, tool, *args, f"--output={file}/out"))
    assert f"--output {file}/out" in error and "is a file, not a folder" in error


@pytest.mark.parametrize("tool", list(TOOLS))
def test_a_read_only_tool_output_is_refused_before_any_work(tool, tmp_path, tiny_checkpoint):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    args = [a.format(checkpoint=tiny_checkpoint[0]) for a in TOOLS[tool]]
    env = {**ENV, "READ_ONLY": str(read_only)}
    done = run("-c", TOOL, tool, *args, f"--output={read_only}/out", env=env)
    error = one_error_line(done)
    assert f"--output {read_only}/out" in error and "is not writable" in error
    assert list(read_only.iterdir()) == []


@pytest.mark.skipif(not pathlib.Path("/proc/self").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("script", ["train.py", "-m icnet_jax.tools.prune"])
def test_a_folder_whose_parent_cannot_be_created_is_one_error_line(script, tiny_checkpoint):
    # /proc looks writable to root, yet nothing can be created in it.
    flag = "--workdir" if script == "train.py" else "--output"
    args = [] if script == "train.py" else [f"--checkpoint={tiny_checkpoint[0]}"]
    error = one_error_line(run(*script.split(), *args, f"{flag}=/proc/no_such/run"))
    assert "/proc/no_such/run" in error and "cannot create" in error


# --- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_during_evaluate_is_interrupted_like_ctrl_c(tmp_path, tiny_checkpoint):
    command = [
        sys.executable, "evaluate.py", f"--checkpoint={tiny_checkpoint[0]}",
        f"--workdir={tmp_path / 'eval'}", f"--config.dataset.data_dir={tmp_path / 'tfds'}",
        *TINY_DATA,
    ]  # fmt: skip
    env = {**ENV, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in process.stdout:  # main has started once the checkpoint is named
        if line.startswith("checkpoint "):
            break
    process.send_signal(signal.SIGTERM)
    output, errors = process.communicate(timeout=600)
    assert process.returncode == cli.EXIT_INTERRUPTED, output + errors
    assert errors.strip().splitlines()[-1] == "error: interrupted", errors
    assert "Traceback" not in errors


# --- Config files that raise --------------------------------------------------------------------

RAISING_CONFIG = """import ml_collections


def check(config):
    raise ValueError("crop_size must be odd")


def get_config():
    config = ml_collections.ConfigDict()
    check(config)
    return config
"""


def test_a_config_file_that_raises_is_named_with_its_line(tmp_path):
    config = tmp_path / "my_config.py"
    config.write_text(RAISING_CONFIG)
    error = one_error_line(run("evaluate.py", f"--config={config}", f"--workdir={tmp_path}/x"))
    assert "crop_size must be odd" in error
    assert f"raised at {config}, line 5" in error
    assert not (tmp_path / "x").exists()


def test_a_config_file_with_a_syntax_error_is_named_with_its_line(tmp_path):
    config = tmp_path / "my_config.py"
    config.write_text("def get_config(:\n    pass\n")
    error = one_error_line(run("train.py", f"--config={config}", f"--workdir={tmp_path}/x"))
    assert "my_config.py" in error and "line 1" in error
    assert not (tmp_path / "x").exists()


# --- Every entry point: --help, unloadable configs, unavailable platforms, outputs ---------------

SCRIPTS = ["train.py", "evaluate.py", "predict.py", "benchmark.py"]
TOOL_MODULES = [f"-m icnet_jax.tools.{tool}" for tool in TOOLS]


@pytest.mark.parametrize("program", SCRIPTS + TOOL_MODULES)
def test_help_and_helpfull_exit_0_and_list_the_outputs(program):
    output = {"train.py": "workdir", "evaluate.py": "workdir", "benchmark.py": "json"}
    for flag in ("--help", "--helpfull"):
        done = run(*program.split(), flag)
        assert done.returncode == cli.EXIT_OK, done.stdout + done.stderr
        # Also the flags that `cli` defines for the script.
        assert f"  --{output.get(program, 'output')}: " in done.stdout, done.stdout
        assert "Traceback" not in done.stdout + done.stderr


def run_in(folder, *command):
    """`python *command` run from `folder`, as a user in another folder does."""
    return run(*command, cwd=folder)


CONFIG_USERS = ["train.py", "evaluate.py", "predict.py"]


@pytest.mark.parametrize("script", CONFIG_USERS)
@pytest.mark.parametrize("override", [[], ["--config.batch_size=2"]])
def test_a_config_file_that_does_not_exist_is_named_with_the_current_folder(
    script, override, tmp_path
):
    new = tmp_path / "new"
    args = {
        "train.py": [f"--workdir={new}"],
        "evaluate.py": [f"--workdir={new}"],
        "predict.py": [f"--checkpoint={tmp_path}", f"--input={tmp_path}", f"--output={new}"],
    }[script]
    # A typo, from the repository root.
    error = one_error_line(run(script, "--config=configs/camvd.py", *override, *args))
    assert "--config=configs/camvd.py" in error and "does not exist" in error, error
    assert f"relative to the current folder, {REPO}" in error, error
    assert "earlier failure" not in error and "config_config" not in error, error
    # The same typo from another folder (a shipped config's path would be found by name there).
    error = one_error_line(
        run_in(tmp_path, REPO / script, "--config=configs/camvd.py", *override, *args)
    )
    assert "configs/camvd.py does not exist" in error, error
    assert f"relative to the current folder, {tmp_path}" in error, error
    assert not new.exists()


def test_a_config_file_typo_in_a_tool_is_named():
    error = one_error_line(
        run("-m", "icnet_jax.tools.convert_weights", "--input=x.npy", "--output=/tmp/x",
            "--config=configs/camvd.py", "--config.batch_size=2")
    )  # fmt: skip
    assert "--config=configs/camvd.py" in error and "does not exist" in error, error


def _cuda_installed() -> bool:
    import importlib.metadata

    return any(importlib.metadata.entry_points(group="jax_plugins"))


@pytest.mark.skipif(_cuda_installed(), reason="a JAX GPU plugin is installed here")
@pytest.mark.parametrize("program", SCRIPTS + TOOL_MODULES)
def test_an_unavailable_jax_platform_is_one_line_with_the_install_command(
    program, tmp_path, tiny_checkpoint
):
    import jax

    image = tmp_path / "image.png"
    image.write_bytes(b"")  # never read: the platform fails first
    args = {
        "train.py": ["--workdir={new}"],
        "evaluate.py": ["--checkpoint={checkpoint}", "--workdir={new}"],
        "predict.py": ["--checkpoint={checkpoint}", f"--input={image}", "--output={new}"],
        "benchmark.py": ["--models=icnet_sub4", "--height=33", "--width=65", "--json={new}/b.json"],
        "-m icnet_jax.tools.convert_weights": ["--input=missing.npy", "--output={new}"],
        "-m icnet_jax.tools.prune": ["--checkpoint={checkpoint}", "--output={new}"],
        "-m icnet_jax.tools.export": ["--checkpoint={checkpoint}", "--output={new}"],
    }[program]
    paths = {"new": tmp_path / "new", "checkpoint": tiny_checkpoint[0]}
    done = run(
        *program.split(), *(a.format(**paths) for a in args), env={**ENV, "JAX_PLATFORMS": "cuda"}
    )
    error = one_error_line(done)
    assert "JAX platform 'cuda'" in error and f"jax {jax.__version__}" in error, error
    assert 'pip install -U "jax[cuda13]"' in error, error
    assert not paths["new"].exists()


# Each script's outputs: (script, flags, the output flag, kind) with {file}, {folder} and
# {checkpoint} filled in; the output path is appended.
OUTPUTS = {
    "train --workdir": ("train.py", [], "--workdir", "folder"),
    "evaluate --workdir": ("evaluate.py", ["--checkpoint={checkpoint}"], "--workdir", "folder"),
    "evaluate --submission_dir": (
        "evaluate.py", ["--checkpoint={checkpoint}", "--workdir={folder}/eval"],
        "--submission_dir", "folder",
    ),
    "predict --output": (
        "predict.py", ["--checkpoint={checkpoint}", "--input={folder}"], "--output", "folder"
    ),
    "benchmark --json": ("benchmark.py", ["--models=icnet_sub4"], "--json", "file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_an_output_under_a_file_is_refused_before_any_work(case, tmp_path, tiny_checkpoint):
    script, args, flag, _ = OUTPUTS[case]
    file = tmp_path / "a_file"
    file.write_text("")
    paths = {"file": file, "folder": tmp_path, "checkpoint": tiny_checkpoint[0]}
    before = sorted(tmp_path.rglob("*"))
    done = run(script, *(a.format(**paths) for a in args), f"{flag}={file}/out")
    error = one_error_line(done)
    assert f"{flag} {file}/out" in error and "is a file, not a folder" in error, error
    assert sorted(tmp_path.rglob("*")) == before


def test_a_json_output_that_is_a_folder_or_cannot_be_created_is_refused(tmp_path):
    error = one_error_line(run("benchmark.py", "--models=icnet_sub4", f"--json={tmp_path}"))
    assert f"--json {tmp_path}: is a folder, not a file" in error, error
    if pathlib.Path("/proc/self").exists():  # nothing can be created in /proc, also as root
        error = one_error_line(run("benchmark.py", "--json=/proc/no_such/out.json"))
        assert "--json /proc/no_such/out.json" in error and "cannot create" in error, error


def test_a_benchmark_json_that_is_a_folder_is_refused_before_any_work(tmp_path):
    error = one_error_line(run("-m", "benchmarks.pipeline_throughput", f"--json={tmp_path}"))
    assert f"--json {tmp_path}: is a folder, not a file" in error, error


BROKEN_CONFIGS = {
    "no get_config": ("x = 1\n", "defines no get_config()"),
    "an import that fails": ("import no_such_module\n", "No module named 'no_such_module'"),
    "not Python": ("# Title\nIt's text.\n", "line 2"),
}


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_a_broken_config_file_with_an_override_is_named_with_its_cause(case, tmp_path):
    text, words = BROKEN_CONFIGS[case]
    config = tmp_path / "my_config.py"
    config.write_text(text)
    done = run("train.py", f"--config={config}", "--config.batch_size=2", f"--workdir={tmp_path}/x")
    error = one_error_line(done)
    assert f"cannot load --config={config}: " in error and words in error, error
    assert not (tmp_path / "x").exists()
