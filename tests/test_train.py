"""train.py end to end on micro configs: DDP equals one process, resume is exact, checkpoints survive SIGKILL,
and every kind of bad input is one line with exit status 2 that writes nothing.

Run: pytest -q tests/test_train.py     (about a minute: it starts torchrun once and train.py several times)
"""

import json
import signal
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers import MICRO, fork, run_inprocess, train_fork, train_ranks, wait_all  # noqa: E402
from minidp import checkpoint, config, vae  # noqa: E402


def losses(out_dir):
    return [json.loads(line)["loss"] for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def params(out_dir, key="model"):
    return torch.load(Path(out_dir) / "ckpt.pt", weights_only=True)[key]


def test_resume_is_exact(tmp_path):
    # uninterrupted: 5 steps; interrupted: 2 steps, then the same command resumed to 5
    assert run_inprocess(tmp_path / "full", "train.steps=5") == 0
    assert run_inprocess(tmp_path / "split", "train.steps=2") == 0
    assert run_inprocess(tmp_path / "split", "train.steps=5") == 0
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert len(full) == len(split) == 5
    assert full == pytest.approx(split, abs=0, rel=1e-6)
    a, b = params(tmp_path / "full"), params(tmp_path / "split")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_accumulation_equals_one_big_batch(tmp_path, micro_run):
    # micro_run: one step of batch 4 (tests/conftest.py). Here 4 micro-steps of 1; a mid-run evaluation
    # (eval_every) must not change the training either
    assert run_inprocess(tmp_path / "acc", "train.micro_batch=1", "train.eval_every=2") == 0
    a, b = params(micro_run), params(tmp_path / "acc")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert losses(micro_run) == pytest.approx(losses(tmp_path / "acc"), rel=1e-5)


@pytest.mark.parametrize("task, launcher", [("depth", "torchrun"), ("referring", "forked ranks")])
def test_ddp_two_gloo_ranks_equal_one_process_with_twice_the_batch(tmp_path, task, launcher, torchrun_run):
    # 2 ranks x per-rank batch 2 vs 1 process x batch 4, same initialisation (seed) and data plan, 3 steps.
    # referring covers the text path, the object picks and the condition drops of the batch plan.
    # depth runs under torchrun itself, once in the suite (in a whole pytest run, started at collection on the idle
    # core: tests/conftest.py); the other multi-rank tests fork their ranks from this process with the variables
    # torchrun sets (tests/helpers.py), which starts them ~10 s sooner.
    assert run_inprocess(tmp_path / "one", f"data.task={task}") == 0
    if launcher == "torchrun":
        code, err, two = torchrun_run()  # helpers.torchrun_command(<its folder>, "data.task=depth")
    else:
        two = tmp_path / "two"
        code, err = wait_all(train_ranks(two, f"data.task={task}", cwd=tmp_path))
    assert code == 0, err[-2000:]
    a, b = params(tmp_path / "one"), params(two)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), "DDP parameters differ from 1 process"
    # the parameters really moved (a test of equal initial weights would prove nothing)
    torch.manual_seed(0)  # train.py seeds with train.seed before building the model
    init = checkpoint.initial_model(config.load_config(ROOT / "configs" / "depth.yaml", [*MICRO, f"data.task={task}"]),
                                    vae.make_codec("pixel"))[0].state_dict()
    assert any(not torch.allclose(init[k], a[k]) for k in a)


def test_sigkill_between_writing_and_renaming_leaves_the_previous_checkpoint_exactly(tmp_path):
    path = tmp_path / "ckpt.pt"
    previous = {"step": 7, "w": torch.randn(1000, generator=torch.Generator().manual_seed(0))}
    checkpoint.save_checkpoint(path, previous)
    # A real process writes step 8 and is killed at the chosen point: after the temporary file is written, at the
    # rename that would publish it (os.replace is swapped for a SIGKILL to itself, in the child only).
    script = (
        "import os, signal, sys, torch; sys.path.insert(0, %r); from minidp import checkpoint\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "checkpoint.save_checkpoint(%r, {'step': 8, 'w': torch.zeros(1000)})\n" % (str(ROOT), str(path))
    )
    (tmp_path / "save.py").write_text(script)
    assert fork(tmp_path / "save.py").wait(timeout=60) == -signal.SIGKILL  # it died inside the save, not after it
    assert (tmp_path / "ckpt.pt.tmp").is_file()  # the new checkpoint was written, never published
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 7 and torch.equal(ckpt["w"], previous["w"])


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # lr = 1e30 makes the weights explode after the first steps; the run must stop with a message, exit 1.
    out = tmp_path / "nan"
    assert run_inprocess(out, "train.steps=2") == 0
    before = params(out)
    rc = run_inprocess(out, "train.steps=50", "train.lr=1e30", "train.grad_clip=0.0", "train.ckpt_every=1000")
    assert rc == 1
    err = capsys.readouterr().err
    assert "at step" in err and "last good checkpoint (step 2)" in err
    after = params(out)
    assert all(torch.equal(before[k], after[k]) for k in before)


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written
# ----------------------------------------------------------------------------------------------------------

def bad_run(tmp_path, capsys, *extra):
    out = tmp_path / "run"
    rc = run_inprocess(out, *extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_unknown_key(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, "train.stepz=3")
    assert "unknown key 'train.stepz'; did you mean 'train.steps'" in err
    assert not (tmp_path / "run").exists()


def test_bad_type(tmp_path, capsys):
    assert "expected int" in bad_run(tmp_path, capsys, "train.steps=many")


def test_bad_missing_init_from(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, f"train.init_from={tmp_path}/nope.pt", "train.init_optional=false")
    assert "checkpoint not found" in err and "nope.pt" in err
    assert not (tmp_path / "run").exists()


def test_bad_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint")
    err = bad_run(tmp_path, capsys, f"train.init_from={bad}")
    assert "corrupt.pt is not a readable" in err


def test_bad_checkpoint_of_another_architecture(tmp_path, capsys):
    # a checkpoint whose stored state dict does not match the architecture its config describes
    from minidp import dit

    good = dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10, learn_sigma=False)
    other = dit.build_dit("tiny", input_size=16, in_channels=3, num_classes=10, learn_sigma=False)
    path = tmp_path / "other.pt"
    torch.save({"model_config": good.config, "ema": other.state_dict(), "model": other.state_dict()}, path)
    err = bad_run(tmp_path, capsys, f"train.init_from={path}")
    # the one message: the file, then minidp's summary of what differs (tiny: 6 blocks of 96, patch 4; micro: 2 of 32,
    # patch 2)
    assert err.startswith(f"error: {path}: state dict does not match this DiT (config {{'input_size': 16, 'patch_size': 2")
    assert "40 unexpected keys: blocks.2.attn.qkv.weight" in err
    assert "32 shape mismatches: pos_embed: checkpoint (1, 16, 96) vs model (1, 64, 32)" in err  # one line: bad_run


def test_bad_unwritable_run_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run directory should go")
    rc = run_inprocess(blocker / "run")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot write to" in err and "\n" not in err
    assert blocker.read_text().startswith("a file")


def test_bad_a_task_the_dataset_cannot_provide(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, "data.dataset=flyingchairs")
    assert "'flyingchairs' cannot provide task 'depth'" in err
    assert not (tmp_path / "run").exists()


def test_bad_batch_not_divisible_by_world_size(tmp_path, capsys, monkeypatch):
    # The check runs before any process group starts, so faking torchrun's variables is enough.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    err = bad_run(tmp_path, capsys)
    assert "global_batch = 4 is not divisible by world size 3" in err


def test_resume_refuses_a_run_directory_of_another_task(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_inprocess(out, "train.steps=1") == 0
    before = (out / "ckpt.pt").read_bytes()
    err = bad_run(tmp_path, capsys, "data.task=class", "train.mode=pretrain")
    assert "was trained with data.task = 'depth'" in err
    assert (out / "ckpt.pt").read_bytes() == before


# ----------------------------------------------------------------------------------------------------------
# MoE through train.py
# ----------------------------------------------------------------------------------------------------------

def test_upcycle_from_a_dense_run_starts_at_the_dense_loss_and_logs_expert_load(tmp_path, capsys):
    dense = tmp_path / "dense"
    assert run_inprocess(dense, "train.steps=2") == 0
    up = tmp_path / "up"
    assert run_inprocess(up, "train.steps=2", f"train.upcycle_from={dense / 'ckpt.pt'}", "model.upcycle_experts=4") == 0
    ckpt = torch.load(up / "ckpt.pt", weights_only=True)
    assert ckpt["model_config"]["num_experts"] == 4 and ckpt["model_config"]["renormalize"] is True
    records = [json.loads(line) for line in (up / "log.jsonl").read_text().splitlines()]
    assert all(len(r["expert_load"][0]) == 4 for r in records) and records[0]["balance_loss"] > 0
    # the first step of the upcycled run sees the batch the dense run's step 3 would have seen, with the
    # dense EMA weights: check the function is preserved at the start by comparing with a dense continuation
    cont = tmp_path / "cont"
    assert run_inprocess(cont, "train.steps=1", f"train.init_from={dense / 'ckpt.pt'}") == 0
    assert records[0]["loss"] == pytest.approx(json.loads((cont / "log.jsonl").read_text().splitlines()[0])["loss"],
                                               rel=1e-4)
    # upcycling an MoE checkpoint again is refused, by name
    capsys.readouterr()
    rc = run_inprocess(tmp_path / "again", f"train.upcycle_from={up / 'ckpt.pt'}")
    assert rc == 2 and "already upcycled" in capsys.readouterr().err


def test_moe_preset_trains_and_resumes_through_train_py(tmp_path):
    out = tmp_path / "moe"
    assert run_inprocess(out, "model.preset=micro-4E2A", "train.steps=2") == 0
    assert run_inprocess(out, "model.preset=micro-4E2A", "train.steps=3") == 0  # resumes the MoE checkpoint
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all("expert_load" in r for r in records)


def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    proc = train_fork(out, "train.steps=100000", "train.ckpt_every=100000", cwd=tmp_path)
    for line in proc.lines():  # wait until training is under way
        if line.startswith("step"):
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0, proc.err()[-2000:]
    assert "interrupted: checkpoint saved at step" in proc.out()
    step = torch.load(out / "ckpt.pt", weights_only=True)["step"]
    assert 1 <= step < 100000
    assert not (out / "eval.json").exists()  # an interrupted run is not evaluated


def test_a_second_run_on_the_same_directory_is_refused_and_a_killed_run_leaves_no_stale_lock(tmp_path, capsys):
    out = tmp_path / "run"
    args = ("train.steps=100000", "train.ckpt_every=5")
    first = train_fork(out, *args, cwd=tmp_path)
    for line in first.lines():  # wait until training is under way and a checkpoint exists
        if line.startswith("step") and (out / "ckpt.pt").exists():
            break
    second = train_fork(out, *args, cwd=tmp_path)
    assert second.wait(timeout=120) == 2
    err = second.err().strip()
    assert err.startswith("error: ") and "\n" not in err and f"pid {first.pid}" in err and "in use" in err
    first.kill()
    first.wait()
    # the third start (in this process: the lock is the kernel's, whoever asks) resumes the killed run's checkpoint:
    # the kernel released the dead process's lock
    assert run_inprocess(out, "train.steps=6", "train.ckpt_every=5") == 0
    assert "resuming" in capsys.readouterr().out
