"""Settings for the whole suite, the micro run several tests share, and the one expensive run that starts before
the tests do.

- One thread, in this process and (through OMP_NUM_THREADS) in every train.py / torchrun child: the micro models
  gain nothing from a second thread, and while another process holds the other core (a child run, the compiler
  below) a second thread's spin-waits made an in-process run up to 6x slower here.
- `micro_run`: train.py configs/depth.yaml + helpers.MICRO, trained once per session for the tests that compare
  another run with it (accumulation, compile, FSDP, bad input). Read it; copy it before writing into it.
- The compiled training run of tests/test_parallel.py spends ~40 s in the C++ compiler when torch.compile's cache
  is cold (CI). It starts as a train.py child as soon as collection is done, so the compiler works on the core the
  rest of the suite leaves idle, and its test waits only for what is left (`compiled_run`). Nothing starts when
  that test is not selected.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import MICRO, ROOT, Forked, run_inprocess

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

COMPILED_TEST = "test_compiled_training_matches_eager_losses"
_background = {}


def pytest_collection_finish(session):
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return  # the test skips: torch.compile's CPU backend needs a C++ compiler
    if any(item.name == COMPILED_TEST for item in session.items):
        folder = Path(tempfile.mkdtemp(prefix="minidp_compiled_"))
        out = folder / "compiled"
        cmd = [sys.executable, str(ROOT / "train.py"), str(ROOT / "configs" / "depth.yaml"), *MICRO,
               f"train.out_dir={out}", "train.compile=true"]
        log = open(folder / "output.txt", "w")
        proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        _background.update(folder=folder, out=out, log=log, proc=proc)


def pytest_sessionfinish(session):
    for child in list(Forked.running):  # a forked train.py that a failed test never stopped (tests/helpers.py)
        child.kill()
        child.wait()
    if _background:
        _background["proc"].kill()  # finished already unless its test never ran (a -x stop, Ctrl-C)
        _background["proc"].wait()
        _background["log"].close()
        shutil.rmtree(_background["folder"], ignore_errors=True)


@pytest.fixture
def compiled_run():
    """The run directory of `train.py configs/depth.yaml MICRO train.compile=true`, started at collection."""
    if not _background:
        pytest.skip("the compiled run was not started: no C++ compiler")
    returncode = _background["proc"].wait(timeout=600)
    assert returncode == 0, (_background["folder"] / "output.txt").read_text()[-3000:]
    return _background["out"]


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """The plain micro depth run (run_inprocess with no extra override), trained once: read it or copy it."""
    out = tmp_path_factory.mktemp("micro") / "run"
    assert run_inprocess(out) == 0
    return out
