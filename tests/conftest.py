"""Settings for the whole suite, the micro run several tests share, and the one expensive run that starts before
the tests do.

- One thread, in this process and (through OMP_NUM_THREADS) in every train.py / torchrun child: the micro models
  gain nothing from a second thread, and while another process holds the other core (a child run, the compiler
  below) a second thread's spin-waits made an in-process run up to 6x slower here.
- `micro_run`: train.py configs/depth.yaml + helpers.MICRO, trained once per session for the tests that compare
  another run with it (accumulation, compile, FSDP, bad input). Read it; copy it before writing into it.
- The suite runs on one core and leaves the other idle, so the expensive work that needs no test's state runs
  there, in children started as soon as collection is done, one after another (`_background`): first the compiled
  training run of tests/test_parallel.py (~40 s in the C++ compiler when torch.compile's cache is cold, as on CI),
  then every selected tutorial chapter of tests/test_tutorials.py (~30 s, run in a child by that file's own code),
  then the torchrun run of tests/test_train.py (~10 s: three fresh pythons). Their tests wait only for what is left
  (`compiled_run`, `chapter_result`, `torchrun_run`). Nothing starts for a test that is not
  selected.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import torch

from helpers import MICRO, ROOT, Forked, run_inprocess, torchrun_command

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

COMPILED_TEST = "test_compiled_training_matches_eager_losses"
CHAPTER_TEST = "test_chapter_runs"
TORCHRUN_TEST = "test_ddp_two_gloo_ranks_equal_one_process_with_twice_the_batch[depth-torchrun]"


class Background:
    """Commands run one after another in children, on the core the suite leaves idle; `wait(name)` blocks until the
    named one has ended and gives its exit status (None: it never ran, because the session is ending)."""

    def __init__(self, jobs, folder):
        self.jobs, self.folder, self.status, self.proc = dict(jobs), folder, {}, None
        self.done = {name: threading.Event() for name in self.jobs}
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for name, cmd in self.jobs.items():
            if not self.stopped:
                with open(self.folder / f"{name}.txt", "w") as log:
                    self.proc = subprocess.Popen(cmd, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
                    self.status[name] = self.proc.wait()
            self.done[name].set()

    def wait(self, name, timeout=600):
        assert self.done[name].wait(timeout), f"background job {name} still running after {timeout} s"
        return self.status.get(name)

    def output(self, name):
        return (self.folder / f"{name}.txt").read_text()

    def stop(self):
        self.stopped = True
        if self.proc is not None and self.proc.poll() is None:  # a -x stop or Ctrl-C before its test ran
            self.proc.kill()
        self.thread.join(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


_background = {}


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    names = {item.name.split("[")[0] for item in session.items}
    folder = Path(tempfile.mkdtemp(prefix="minidp_background_"))
    jobs = []
    # torch.compile's CPU backend needs a C++ compiler: without one the compiled test skips
    if COMPILED_TEST in names and (shutil.which("g++") or shutil.which("c++")):
        jobs.append(("compiled", [sys.executable, str(ROOT / "train.py"), str(ROOT / "configs" / "depth.yaml"),
                                  *MICRO, f"train.out_dir={folder / 'compiled'}", "train.compile=true"]))
    chapters = [item.callspec.params["chapter"] for item in session.items if item.name.startswith(CHAPTER_TEST + "[")]
    if chapters:
        jobs.append(("chapters", [sys.executable, str(ROOT / "tests" / "test_tutorials.py"), str(folder / "chapters"),
                                  *map(str, chapters)]))
    if any(item.name == TORCHRUN_TEST for item in session.items):
        jobs.append(("torchrun", torchrun_command(folder / "torchrun", "data.task=depth")))
    if jobs:
        _background["jobs"] = Background(jobs, folder)
    else:
        folder.rmdir()


def pytest_sessionfinish(session):
    for child in list(Forked.running):  # a forked train.py that a failed test never stopped (tests/helpers.py)
        child.kill()
        child.wait()
    if _background:
        _background.pop("jobs").stop()


@pytest.fixture
def compiled_run():
    """The run directory of `train.py configs/depth.yaml MICRO train.compile=true`, started at collection."""
    jobs = _background.get("jobs")
    if jobs is None or "compiled" not in jobs.jobs:
        pytest.skip("the compiled run was not started: no C++ compiler")
    assert jobs.wait("compiled") == 0, jobs.output("compiled")[-3000:]
    return jobs.folder / "compiled"


@pytest.fixture
def torchrun_run():
    """torchrun_run(): (exit status, output, run directory) of helpers.torchrun_command(<folder>, "data.task=depth"),
    started at collection because its test was selected."""
    def result():
        jobs = _background["jobs"]
        return jobs.wait("torchrun"), jobs.output("torchrun"), jobs.folder / "torchrun"
    return result


@pytest.fixture
def chapter_result():
    """chapter_result(chapter): the background child's result for a selected tutorial chapter, "ok" or the error."""
    def result(chapter):
        jobs = _background["jobs"]
        jobs.wait("chapters")
        path = jobs.folder / "chapters" / f"{Path(chapter).stem}.txt"
        return path.read_text() if path.is_file() else f"no result; the child's output:\n{jobs.output('chapters')}"
    return result


@pytest.fixture(autouse=True)
def tf32_restored():
    """A CUDA run in this process (parallel.init) turns TF32 on for float32 matmuls; restored after each test, so a
    later test's float32 GPU-against-CPU claim does not inherit it (on a machine without CUDA: nothing changes)."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """The plain micro depth run (run_inprocess with no extra override), trained once: read it or copy it."""
    out = tmp_path_factory.mktemp("micro") / "run"
    assert run_inprocess(out) == 0
    return out
