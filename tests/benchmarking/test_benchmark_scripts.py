"""The scripts of benchmarks/ take absl flags like the entry scripts: `--help` lists each one's
own flags, and a bad value is one `error:` line."""

import pytest

from tests import scripts

# A flag of each script's own (underscores: absl spells them so).
OWN_FLAG = {
    "cpu_profile.py": "--onnx",
    "export_speed.py": "--pause",
    "video_speed.py": "--batches",
    "pipeline_throughput.py": "--image_format",
    "standin_resnet50.py": "--out",
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(OWN_FLAG))
def test_help_lists_the_script_s_flags(script):
    env = {**scripts.ENV, "PYTHONPATH": str(scripts.REPO)}
    done = scripts.run(f"benchmarks/{script}", "--help", env=env)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert OWN_FLAG[script] in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_an_unknown_image_format_is_one_error_line():
    env = {**scripts.ENV, "PYTHONPATH": str(scripts.REPO)}
    done = scripts.run("benchmarks/pipeline_throughput.py", "--image_format=png,bmp", env=env)
    assert "--image_format" in scripts.one_error_line(done)
