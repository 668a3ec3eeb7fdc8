"""Faults lose nothing: a write the OS refuses half-way, a corrupt latent-cache shard, a dead loader worker, a killed
rank, a torn log line, a killed sweep. Each fault is made real (a file-size limit set with setrlimit, bytes changed on
disk, SIGKILL) on a real train.py / sweep process (forked from the test process: tests/helpers.py); each ends in one
line, keeps the last checkpoint, and the same command then resumes. Nothing of minidp is mocked.

Run: pytest -q tests/test_faults.py     (about half a minute: eight child processes, micro runs)
"""

import fcntl
import json
import os
import pickle
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers import MICRO, fork, run_child_forked, run_inprocess, train_fork, train_ranks  # noqa: E402
import fit_scaling  # noqa: E402
import sample  # noqa: E402
from test_data import hypersim_tree  # noqa: E402
from test_readers import _chairs  # noqa: E402
from minidp import checkpoint, config, data, readers, recipe  # noqa: E402

DEPTH = str(ROOT / "configs" / "depth.yaml")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The in-process runs on one thread, as the child processes (OMP_NUM_THREADS=1): a micro model gains nothing
    from a second one, and on a shared 2-core machine its spin-waits made a run 6x slower (23 s vs 3.8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def steps_logged(out_dir):
    """{step: loss} of a run's log.jsonl, every line of which must be a whole JSON record."""
    lines = (Path(out_dir) / "log.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# ----------------------------------------------------------------------------------------------------------
# A write the OS refuses half-way
# ----------------------------------------------------------------------------------------------------------

def test_a_checkpoint_write_past_the_file_size_limit_is_one_line_keeps_the_previous_one_and_resumes(tmp_path):
    out = tmp_path / "run"
    assert run_inprocess(out, "train.steps=2") == 0
    before = torch.load(out / "ckpt.pt", weights_only=True)
    size = (out / "ckpt.pt").stat().st_size
    # the same command to step 4 under a limit of half a checkpoint: the step-4 checkpoint fails part-way
    # (the child may write no file past the limit, `ulimit -f`: a write past it fails with EFBIG, "File too large")
    proc = train_fork(out, "train.steps=4", file_size_limit=size // 2)
    assert proc.wait(timeout=120) == 3, proc.err()[-3000:]
    line = one_line(proc.err())
    assert str(out / "ckpt.pt") in line and "File too large" in line
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    kept = torch.load(out / "ckpt.pt", weights_only=True)
    assert kept["step"] == 2 and kept["format"] == checkpoint.FORMAT
    assert all(torch.equal(kept["model"][k], before["model"][k]) for k in before["model"])
    # the limit lifted, the same command resumes from step 2 and finishes
    assert run_inprocess(out, "train.steps=4") == 0
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 4
    assert sorted(steps_logged(out)) == [1, 2, 3, 4]


# ----------------------------------------------------------------------------------------------------------
# A latent-cache shard changed on disk
# ----------------------------------------------------------------------------------------------------------

def test_a_truncated_or_flipped_cache_shard_is_one_line_naming_it_and_verify_encodes_only_it_again(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["cache", DEPTH, *MICRO, f"train.out_dir={out}"]
    assert data.main([*args, "--shard-size=16"]) == 0  # the 64 training scenes in 4 shards
    shards = sorted((out / "latents").glob("shard_*.pt"))
    original = [p.read_bytes() for p in shards]
    flipped = bytearray(original[2])
    flipped[len(flipped) // 2] ^= 0x01  # one bit of a tensor's bytes: torch.load would read it without a word
    damage = {1: original[1][:-1], 2: bytes(flipped)}  # shard 1 one byte short, shard 2 with a flipped bit
    for i, damaged in damage.items():
        shards[i].write_bytes(damaged)
        capsys.readouterr()
        assert run_inprocess(out) == 2
        line = one_line(capsys.readouterr().err)
        assert str(shards[i]) in line and "--verify" in line
        assert not (out / "ckpt.pt").exists()  # refused before anything ran
        shards[i].write_bytes(original[i])
    # both damaged: --verify encodes shards 1 and 2 again, byte for byte as they were, and leaves 0 and 3 alone
    for i, damaged in damage.items():
        shards[i].write_bytes(damaged)
    untouched = {i: shards[i].stat().st_mtime_ns for i in (0, 3)}
    time.sleep(0.01)
    assert data.main([*args, "--verify"]) == 0
    assert "2 shard(s) encoded" in capsys.readouterr().out
    assert [p.read_bytes() for p in shards] == original
    assert {i: shards[i].stat().st_mtime_ns for i in (0, 3)} == untouched
    assert data.LatentCache(out / "latents", config.load_config(DEPTH, MICRO).data).size == 64


# ----------------------------------------------------------------------------------------------------------
# A log line torn by a crash
# ----------------------------------------------------------------------------------------------------------

def test_a_torn_last_log_line_is_cut_off_on_resume_and_skipped_with_one_warning_by_fit(tmp_path, capsys):
    out, log = tmp_path / "run", tmp_path / "run" / "log.jsonl"
    assert run_inprocess(out, "train.steps=4") == 0
    with open(log, "a") as f:  # the process died while writing step 5's record
        f.write('{"step": 5, "loss": 0.4')
    capsys.readouterr()
    # resuming cuts the torn line off (saying so once) and logs steps 5, 6 on lines of their own
    assert run_inprocess(out, "train.steps=6") == 0
    warning = one_line(capsys.readouterr().err)
    assert warning.startswith("warning:") and "cut off" in warning
    assert sorted(steps_logged(out)) == [1, 2, 3, 4, 5, 6]
    # fit over a log on the law L = 2 C^-0.1 (a micro run's 6 losses do not fall) whose last line is torn
    law = tmp_path / "law"
    law.mkdir()
    macs = [10.0 ** k for k in range(8, 14)]
    records = [{"step": i + 1, "loss": 2 * c ** -0.1, "train_macs": c} for i, c in enumerate(macs)]
    (law / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 7, "lo')
    assert fit_scaling.main(["fit", str(law), "--smooth", "1"]) == 0
    warning = one_line(capsys.readouterr().err)
    assert warning.startswith("warning:") and str(law / "log.jsonl") in warning
    assert json.loads((law / "scaling_loss.json").read_text())["b"] == pytest.approx(-0.1, rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# A process the run depends on killed: a DataLoader worker, a rank
# ----------------------------------------------------------------------------------------------------------

def children(pid):
    """The pids whose parent is `pid` (Linux: /proc/<pid>/stat's fourth field)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_for_checkpoint(out_dir, proc, deadline=60):
    start = time.time()
    while not (Path(out_dir) / "ckpt.pt").is_file():
        assert proc.poll() is None, proc.err()[-3000:]
        assert time.time() - start < deadline, "no checkpoint written"
        time.sleep(0.02)


REFERENCE_STEPS = 24  # within warm-up (100 steps), where nothing depends on train.steps: a run killed on its way
#                      to 100 steps and resumed to 24 must log what an uninterrupted 24-step run logs


@pytest.fixture(scope="module")
def hypersim(tmp_path_factory):
    """A tiny Hypersim (6 training frames, 2 validation) and an uninterrupted run of REFERENCE_STEPS on it."""
    tmp = tmp_path_factory.mktemp("hypersim")
    real = ["data.dataset=hypersim", f"data.root={hypersim_tree(tmp / 'data', n_train=6, n_val=2)}",
            "data.train_size=6", "data.val_size=2", "data.workers=1", "train.ckpt_every=2"]
    assert run_inprocess(tmp / "uninterrupted", *real, f"train.steps={REFERENCE_STEPS}") == 0
    return real, steps_logged(tmp / "uninterrupted")


def assert_resuming_reproduces(out, real, reference):
    """Resume `out` in this process to REFERENCE_STEPS; every step's loss must be the uninterrupted run's."""
    assert run_inprocess(out, *real, f"train.steps={REFERENCE_STEPS}") == 0
    resumed = steps_logged(out)
    assert sorted(resumed) == sorted(reference)
    assert [resumed[s] for s in reference] == pytest.approx([reference[s] for s in reference], rel=1e-5, abs=0)


def test_a_loader_worker_killed_mid_run_ends_it_in_one_line_and_resuming_reproduces_the_losses(tmp_path, hypersim):
    real, reference = hypersim
    out = tmp_path / "run"
    proc = train_fork(out, *real, "train.steps=100")
    wait_for_checkpoint(out, proc)
    [worker] = children(proc.pid)  # the one DataLoader worker (data.workers=1), as the OOM killer would pick it
    os.kill(worker, signal.SIGKILL)
    killed = time.time()
    assert proc.wait(timeout=60) == 3, proc.err()[-3000:]
    assert time.time() - killed < 60
    assert "data loader worker died" in one_line(proc.err())
    assert 2 <= checkpoint.load_checkpoint(out, "test")["step"] < REFERENCE_STEPS  # intact, and mid-run
    assert_resuming_reproduces(out, real, reference)


def test_one_of_two_gloo_ranks_killed_ends_the_other_in_one_line_and_resuming_reproduces_the_losses(tmp_path,
                                                                                                   hypersim):
    # two ranks started as a cluster scheduler (srun) starts them: no torchrun agent to stop the survivor
    real, reference = hypersim
    out = tmp_path / "run"
    ranks = train_ranks(out, *real, "train.steps=100", "train.rank_timeout_s=30")
    try:
        wait_for_checkpoint(out, ranks[0])
        ranks[1].kill()  # SIGKILL
        killed = time.time()
        assert ranks[0].wait(timeout=60) == 3, ranks[0].err()[-3000:]
    finally:
        for proc in ranks:
            proc.kill()
            proc.wait()
    assert time.time() - killed < 60
    assert "another rank stopped answering" in one_line(ranks[0].err())
    assert 2 <= checkpoint.load_checkpoint(out, "test")["step"] < REFERENCE_STEPS
    assert_resuming_reproduces(out, real, reference)


# ----------------------------------------------------------------------------------------------------------
# A sweep killed mid-run, and a second sweep on its folder
# ----------------------------------------------------------------------------------------------------------

def wait_unlocked(run_dir, deadline=60):
    """Wait until no process holds run_dir's lock (train.py's flock, which the kernel drops when its process ends)."""
    start = time.time()
    with open(Path(run_dir) / ".lock") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                assert time.time() - start < deadline, f"{run_dir} still locked"
                time.sleep(0.05)


def test_a_sweep_killed_mid_run_resumes_it_and_a_second_sweep_on_its_folder_is_refused(tmp_path, monkeypatch,
                                                                                          capfd):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the children of the sweep run in this process below
    out, sweep = tmp_path / "out", tmp_path / "sweep.yaml"
    (out / "short").mkdir(parents=True)  # a run the sweep finished before (eval.json is what the sweep checks)
    (out / "short" / "log.jsonl").write_text('{"step": 1, "loss": 0.5, "train_macs": 1e7}\n')
    (out / "short" / "eval.json").write_text('{"absrel": 0.5}\n')
    sweep.write_text(f"""
config: {DEPTH}
out: {out}
common: [{", ".join(MICRO)}, train.ckpt_every=2, sample.ensemble=1]
variants:
  short: [train.steps=4]
  long: [train.steps=50]
fit: {{y: []}}  # the fit is not what this test is about
""")
    first = fork(ROOT / "fit_scaling.py", "sweep", sweep)
    wait_for_checkpoint(out / "long", first)  # the sweep skipped the finished run and is in the other one
    capfd.readouterr()
    assert fit_scaling.main(["sweep", str(sweep)]) == 2
    assert "in use by a running fit_scaling.py sweep" in one_line(capfd.readouterr().err)
    first.kill()  # SIGKILL: the sweep cannot pass anything on to its child
    first.wait()
    wait_unlocked(out / "long")  # its train.py got SIGTERM, saved and stopped, instead of training on as an orphan
    stopped = checkpoint.load_checkpoint(out / "long", "test")["step"]
    assert stopped < 50 and not (out / "long" / "eval.json").exists()
    # the same command again: the finished run is skipped, the one it was in resumes where it stopped (its
    # train.py forked from this process, for speed: how a sweep starts its children was tested above)
    monkeypatch.setattr(fit_scaling, "run_child", run_child_forked)
    assert fit_scaling.main(["sweep", str(sweep)]) == 0
    printed = capfd.readouterr().out
    assert "short: finished, skipped" in printed
    assert f"resuming {out / 'long' / 'ckpt.pt'} at step {stopped}" in printed
    assert sorted(steps_logged(out / "long")) == list(range(1, 51))
    assert (out / "long" / "eval.json").is_file() and not (out / "short" / "ckpt.pt").exists()


# ----------------------------------------------------------------------------------------------------------
# Loading a checkpoint: torch's warnings, a newer format
# ----------------------------------------------------------------------------------------------------------

def test_a_raw_pickle_given_as_a_checkpoint_is_one_line_without_torchs_warning(tmp_path, capsys):
    raw = tmp_path / "raw.pt"
    with open(raw, "wb") as f:  # protocol 3+ makes torch's weights_only unpickler warn before it refuses
        pickle.dump({"model": {}, "ema": {}, "model_config": {}}, f, protocol=4)
    with warnings.catch_warnings(record=True) as caught:  # what would reach the terminal (pytest hides warnings)
        warnings.simplefilter("always")
        assert sample.main([str(raw)]) == 2
    assert [str(w.message) for w in caught] == []  # torch's UserWarning added two lines before
    assert str(raw) in one_line(capsys.readouterr().err)


def test_a_checkpoint_of_a_newer_format_is_refused_in_one_line(tmp_path, capsys):
    newer = tmp_path / "newer.pt"
    torch.save({"format": 99, "model": {}, "ema": {}, "model_config": {}, "step": 1}, newer)
    assert sample.main([str(newer)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(newer) in line and "checkpoint format 99" in line
    assert run_inprocess(tmp_path / "run", f"train.init_from={newer}") == 2
    assert "newer than this minidp reads" in one_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------------------------------------
# A NaN or inf in a real dataset's file
# ----------------------------------------------------------------------------------------------------------

def test_a_nan_or_inf_in_a_flow_file_is_masked_out_and_never_reaches_the_loss(tmp_path):
    _chairs(tmp_path)
    flow = readers.read_flo(tmp_path / "data" / "00001_flow.flo")
    flow[0, 1, 2], flow[1, 3, 4] = float("nan"), float("inf")  # (u at row 1, col 2), (v at row 3, col 4)
    readers.write_flo(tmp_path / "data" / "00001_flow.flo", flow)
    item = readers.FlyingChairs(tmp_path, "train")[0]
    assert torch.isfinite(item["flow"]).all()
    assert not item["flow_valid"][1, 2] and not item["flow_valid"][3, 4] and item["flow_valid"].sum() == 6 * 8 - 2
    loss = recipe.masked_loss(torch.zeros(1, 2, 6, 8), item["flow"][None], item["flow_valid"][None])
    assert torch.isfinite(loss)  # NaN x 0 = NaN: masking the loss alone would not keep it out


def test_a_log_write_past_the_file_size_limit_is_one_line_too_and_the_torn_line_it_leaves_is_cut(tmp_path, capsys):
    # no checkpoint is due (ckpt_every 100): the first write to fail is log.jsonl's, a plain append that stops
    # part-way through a record
    out = tmp_path / "run"
    proc = train_fork(out, "train.steps=20", "train.ckpt_every=100", file_size_limit=2048)  # config.yaml: 1.4 KB
    assert proc.wait(timeout=120) == 3, proc.err()[-3000:]
    assert "File too large" in one_line(proc.err())
    assert not (out / "ckpt.pt").exists() and not (out / "log.jsonl").read_text().endswith("\n")
    assert run_inprocess(out, "train.steps=20", "train.ckpt_every=100") == 0  # the limit lifted
    assert "cut off" in one_line(capsys.readouterr().err)
    assert sorted(steps_logged(out)) == list(range(1, 21))


def test_sigterm_during_the_final_evaluation_stops_it_at_once_and_keeps_the_finished_checkpoint(tmp_path):
    # 1024 validation scenes x 5 members: seconds of evaluation, long enough to be interrupted in the middle of it
    out = tmp_path / "run"
    proc = train_fork(out, "train.steps=2", "sample.num_images=1024", "sample.ensemble=5", "sample.steps=4")
    for line in proc.lines():  # training is over when train.py says it evaluates
        if "evaluating" in line:
            break
    time.sleep(1.0)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0 and time.time() - sent < 10, (proc.returncode, proc.err()[-2000:])
    assert "interrupted during evaluation: the checkpoint at step 2" in proc.out() and "Traceback" not in proc.err()
    assert checkpoint.load_checkpoint(out, "test")["step"] == 2
    assert not (out / "eval.json").exists()  # never a half-written report


def test_where_a_gpu_exists_children_start_fresh_and_keep_what_a_fork_gives(tmp_path, monkeypatch):
    # a forked child's backward raises once the parent's autograd engine has started its per-GPU threads (seen on an
    # H200), so helpers.Forked starts a fresh python there: argv, cwd, the file-size limit, the exit status and the
    # stack dump on a timeout must all still hold
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    script = tmp_path / "child.py"
    script.write_text("import errno, os, sys\nprint(sys.argv[1:], os.getcwd())\n"
                      "try:\n    open('big', 'wb').write(bytes(10_000))\nexcept OSError as e:\n"
                      "    print(errno.errorcode[e.errno])\nsys.exit(3)\n")
    child = fork(script, "a", "b", cwd=tmp_path, file_size_limit=4096)
    assert child.wait(60) == 3
    assert child.out().split("\n")[:2] == [f"['a', 'b'] {tmp_path}", "EFBIG"] and hasattr(child, "_popen")
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    sleeper = fork(tmp_path / "sleeper.py")
    with pytest.raises(TimeoutError, match=r"sleeper.py\", line 2"):
        sleeper.wait(timeout=2)
