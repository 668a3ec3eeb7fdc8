"""Checkpoints: run directories stand for their ckpt.pt, every failure is one line naming the file, and a
pickle that would run code is refused before any of it runs; messages from torch or the OS keep their first
line (minidp/errors.py's one_line and ArgumentParser: tests/test_errors.py).

Run: pytest -q tests/test_checkpoint.py
"""

import pickle

import pytest
import torch

from minidp import checkpoint, dit, errors


class _Plant:
    """Unpickling this object would create a file (the attack weights_only=True must stop)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_with_code_is_refused_and_its_code_never_runs(tmp_path):
    planted = tmp_path / "planted.txt"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": _Plant(str(planted))}, f, protocol=2)
    with pytest.raises(errors.InputError) as info:
        checkpoint.load_checkpoint(evil, "train.init_from")
    assert "evil.pt" in str(info.value) and "\n" not in str(info.value)
    assert not planted.exists()


def test_a_run_directory_means_its_ckpt_pt(tmp_path):
    model = dit.build_dit("micro", input_size=8, in_channels=3, num_classes=10, learn_sigma=False)
    checkpoint.save_checkpoint(tmp_path / "ckpt.pt", {"ema": model.state_dict(), "model_config": model.config})
    ckpt = checkpoint.load_checkpoint(tmp_path, "sample.py")
    rebuilt = checkpoint.model_from_checkpoint(ckpt, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


def test_missing_and_corrupt_files_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(errors.InputError, match="checkpoint not found: .*nope.pt"):
        checkpoint.load_checkpoint(tmp_path / "nope.pt", "x")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(errors.InputError, match="bad.pt is not a readable") as info:
        checkpoint.load_checkpoint(bad, "x")
    assert "\n" not in str(info.value)


def test_a_task_the_checkpoint_was_not_trained_on_is_named():
    with pytest.raises(errors.InputError, match="trained on depth, not 'flow'"):
        checkpoint.checkpoint_tasks({"tasks": ["depth"]}, "runs/depth/ckpt.pt", "flow")
    assert checkpoint.checkpoint_tasks({"tasks": ["depth"]}, "p", "depth") == ["depth"]
