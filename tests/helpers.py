"""Shared test helpers: the micro depth run that the train.py tests start in-process, scripts run as forked child
processes (`fork`, `train_ranks`), random DiT inputs, and a small referring model and config for the sampling and
evaluation tests.

Not a test file (pytest collects only test_*.py); test files import it as `from helpers import ...`, pytest's
rootdir-relative import mode puts tests/ on sys.path.
"""

import faulthandler
import os
import random
import resource
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from minidp import dit, tasks
from minidp.config import Config

ROOT = Path(__file__).resolve().parent.parent

# A depth fine-tune of the micro DiT at 16 px from scratch: seconds per run. Evaluation is tiny too.
MICRO = [
    "model.preset=micro", "train.init_from=", "data.task=depth", "data.resolution=16", "data.train_size=64",
    "train.mode=finetune", "train.steps=3", "train.global_batch=4", "train.log_every=1", "train.lr=1e-3",
    "train.lr_final=4e-4",  # depth.yaml decays 2x from 4e-3 since 2026-12-04; below lr, as the micro runs always had
    "train.ema_decay=0.9", "sample.steps=2", "sample.num_images=2", "sample.batch=2",
    "train.device=cpu",  # on a GPU machine too: the runs the tests compare are float32 CPU runs (CUDA autocasts)
]


def torchrun_command(out_dir, *extra):
    """`torchrun --nproc_per_node=2 train.py configs/depth.yaml MICRO extra` writing to out_dir, as a list; --standalone:
    torchrun picks a free port, so two suites on one machine do not collide."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
            str(ROOT / "train.py"), str(ROOT / "configs" / "depth.yaml"), *MICRO, *extra, f"train.out_dir={out_dir}"]


def run_inprocess(out_dir, *extra):
    """train.py's main() on configs/depth.yaml + MICRO + extra overrides, writing to out_dir; its exit status."""
    import train  # the script; tests put the repository root on sys.path before calling this

    return train.main([str(ROOT / "configs" / "depth.yaml"), *MICRO, f"train.out_dir={out_dir}", *extra])


class Forked:
    """`python SCRIPT ARGS` as a child process forked from the test process rather than started afresh.

    A fresh python spends ~6 s on 2 cores importing torch, torch._dynamo (AdamW's first call imports it) and
    matplotlib before train.py does anything, and a micro run takes ~2 s after that; the test process has all of them
    imported already, so its fork starts at once. The child runs the script as `__main__` (runpy), with its own
    environment, working directory, stdout and stderr (files, read with `out()` / `err()`, followed with `lines()`),
    and ends with the script's exit status: a real process, which the tests signal, kill and limit like any other.

    On a machine with a GPU the child is a fresh python instead (FRESH_CHILD): autograd's engine starts a thread per
    GPU at the parent's first backward, a CPU one too, and a forked child's backward then raises ("Unable to handle
    autograd's threading in combination with fork-based multiprocessing", seen on an H200).

    What a fork does not test, a fresh process still does: tests/test_imports.py (the scripts start without
    matplotlib), the command-line errors of tests/test_bad_input.py and tests/test_compare.py, and the torchrun test
    of tests/test_train.py.
    """

    running = set()  # children not yet waited for: tests/conftest.py kills what a failed test left behind

    def __init__(self, script, args, env=None, cwd=None, file_size_limit=None):
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.argv, self.returncode = [str(script), *map(str, args)], None
        sys.stdout.flush()
        sys.stderr.flush()
        if torch.cuda.is_available():  # a fresh python (the docstring says why)
            self._popen = subprocess.Popen(  # kept, so that subprocess never reaps the child behind poll()'s back
                [sys.executable, "-c", FRESH_CHILD, *self.argv], stdout=self._out, stderr=self._err,
                env=_with_root_on_path(os.environ if env is None else env), cwd=cwd,
                preexec_fn=lambda: _limit_file_size(file_size_limit))
            self.pid = self._popen.pid
        else:
            self.pid = os.fork()
            if self.pid == 0:
                self._child(self.argv, env, cwd, file_size_limit)
        Forked.running.add(self)

    def _child(self, argv, env, cwd, file_size_limit):  # never returns
        code = 1
        try:
            os.dup2(self._out.fileno(), 1)
            os.dup2(self._err.fileno(), 2)
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")
            signal.signal(signal.SIGINT, signal.default_int_handler)  # what a fresh python starts with
            faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)  # dump_stacks(): where it hangs
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            if cwd is not None:
                os.chdir(cwd)
            _limit_file_size(file_size_limit)
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                Forked.running.discard(self)
        return self.returncode

    def wait(self, timeout=None):
        start = time.time()
        while self.poll() is None:
            if timeout is not None and time.time() - start > timeout:
                self.dump_stacks()
                self.kill()
                self.wait()
                raise TimeoutError(f"{' '.join(self.argv)} still running after {timeout} s:\n{self.report()}")
            time.sleep(0.02)
        return self.returncode

    def dump_stacks(self):
        """Every thread's Python stack, written to the child's stderr (faulthandler, registered on SIGUSR1)."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(1)

    def report(self, chars=3000):
        """The ends of stdout and stderr, for a failure message."""
        return f"--- stdout (end) ---\n{self.out()[-chars:]}\n--- stderr (end) ---\n{self.err()[-chars:]}"

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def out(self):
        return _read(self._out)

    def err(self):
        return _read(self._err)

    def lines(self):
        """stdout line by line as the child writes it, until it ends."""
        done = 0
        while True:
            finished = self.poll() is not None
            text = self.out()
            *whole, _ = text[done:].split("\n")
            for line in whole:
                done += len(line) + 1
                yield line + "\n"
            if finished:
                if text[done:]:
                    yield text[done:]
                return
            time.sleep(0.02)


# What a fresh child runs when forking cannot be used (Forked): the script as __main__, stacks dumped on SIGUSR1.
FRESH_CHILD = ("import faulthandler, os, runpy, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
               "sys.argv = sys.argv[1:]; sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0])); "
               "runpy.run_path(sys.argv[0], run_name='__main__')")


def _with_root_on_path(env):
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)}


def _limit_file_size(limit):
    """`ulimit -f limit` (None: none); with SIGXFSZ ignored a write past it fails with EFBIG."""
    if limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _read(file):
    return os.pread(file.fileno(), os.fstat(file.fileno()).st_size, 0).decode(errors="replace")


def fork(script, *args, env=None, cwd=None, file_size_limit=None):
    """Start `python script args` as a forked child (see Forked); OMP_NUM_THREADS=1 unless env says otherwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env
    return Forked(script, args, env, cwd, file_size_limit)


def train_fork(out_dir, *extra, config="depth.yaml", **kwargs):
    """train.py on configs/<config> + MICRO + extra, writing to out_dir, as a forked child."""
    return fork(ROOT / "train.py", ROOT / "configs" / config, *MICRO, f"train.out_dir={out_dir}", *extra, **kwargs)


def run_child_forked(argv, what):
    """fit_scaling.run_child (`python argv`, an error naming `what` unless it succeeds), the child forked: the sweep
    tests that are not about how a sweep's children start use it. The child's output is passed on."""
    child = fork(*argv)
    code = child.wait()
    sys.stdout.write(child.out())
    sys.stderr.write(child.err())
    if code != 0:
        raise RuntimeError(f"{what} failed with exit status {code}")


def free_port():
    """A free port below Linux's ephemeral range (32768-60999). A port the kernel hands out for bind(("", 0)) is in
    that range, where a rank's connect() to it, retried before rank 0 listens, can be given the same port as its own
    source port and connect to itself (TCP simultaneous open): rendezvous then hangs."""
    while True:
        port = random.SystemRandom().randint(20000, 32000)  # not the tests' seeded random
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            return port


def train_ranks(out_dir, *extra, world_size=2, cwd=None):
    """train.py as train_fork runs it, as world_size gloo ranks, each a forked child with the variables torchrun
    would set (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), as a cluster scheduler
    starts them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [ROOT / "configs" / "depth.yaml", *MICRO, f"train.out_dir={out_dir}", *extra]
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world_size),
                  "LOCAL_WORLD_SIZE": str(world_size)}
    return [Forked(ROOT / "train.py", args, {**env, **rendezvous, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd, None)
            for r in range(world_size)]


def wait_all(ranks, timeout=240):
    """Wait for every rank; the first nonzero exit status with that rank's stderr, else 0 and ''. A rank that fails
    ends the wait at once (the others would only wait for it); past `timeout` every rank's stacks, stdout and stderr
    are in the TimeoutError."""
    start = time.time()
    try:
        while any(rank.poll() is None for rank in ranks):
            failed = [rank for rank in ranks if rank.poll() not in (None, 0)]
            if failed:
                return failed[0].returncode, failed[0].err()[-3000:]
            if time.time() - start > timeout:
                for rank in ranks:
                    rank.dump_stacks()
                raise TimeoutError(f"ranks still running after {timeout} s:\n" + "\n".join(
                    f"=== rank {r}, exit status {rank.poll()} ===\n{rank.report()}" for r, rank in enumerate(ranks)))
            time.sleep(0.02)
    finally:
        for rank in ranks:
            rank.kill()
            rank.wait()
    for rank in ranks:
        if rank.returncode != 0:
            return rank.returncode, rank.err()[-3000:]
    return 0, ""


def dit_inputs(model, batch=3, groups=1, seed=1):
    """Random (x, t, y) for `model`: x (B, G*C, H, W), t in 0..999, y a class id."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, groups * model.in_channels, model.input_size, model.input_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    return x, t, y


def text_model(seed=0):
    torch.manual_seed(seed)
    model = dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10, learn_sigma=False)
    model = dit.add_text(dit.make_multitask(dit.widen_input(model, 2), 1), len(tasks.VOCAB))
    with torch.no_grad():  # leave adaLN-Zero's zeros behind, so every path changes the output
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def referring_cfg(**sample):
    cfg = Config()
    cfg.data.task, cfg.data.resolution = "referring", 16
    cfg.diffusion.prediction = "x0"
    cfg.sample.steps, cfg.sample.num_images, cfg.sample.batch, cfg.sample.ensemble = 1, 4, 4, 1
    for k, v in sample.items():
        setattr(cfg.sample, k, v)
    return cfg
