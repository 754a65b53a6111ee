"""The rule of every output path (`errors.check_outputs`): folders may be missing (they are
created, with their parents), files must not be folders, and something must be creatable in the
nearest existing folder."""

import os

import pytest

from icnet_jax import errors


def test_missing_folders_pass_and_nothing_is_created(tmp_path):
    folder, file = tmp_path / "a" / "b", tmp_path / "c" / "d.json"
    errors.check_outputs({"--workdir": (folder, "folder"), "--json": (file, "file")})
    errors.check_outputs({"--json": (None, "file"), "--output": ("", "folder")})  # not given
    assert list(tmp_path.iterdir()) == []


def test_a_file_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(errors.UserError, match=r"--json .*: is a folder, not a file"):
        errors.check_outputs({"--json": (tmp_path, "file")})


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_an_output_under_a_file_is_refused(kind, tmp_path):
    file = tmp_path / "a_file"
    file.write_text("")
    with pytest.raises(errors.UserError, match=f"--out {file}/x: {file} is a file, not a folder"):
        errors.check_outputs({"--out": (file / "x", kind)})


def test_a_read_only_file_or_folder_is_refused(tmp_path, monkeypatch):
    file = tmp_path / "out.json"
    file.write_text("")
    # As root everything is writable to os.access: it answers as for another user.
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k)
    )
    with pytest.raises(errors.UserError, match="the file is not writable"):
        errors.check_outputs({"--json": (file, "file")})
    with pytest.raises(errors.UserError, match=f"{tmp_path} is not writable"):
        errors.check_outputs({"--json": (tmp_path / "new.json", "file")})
