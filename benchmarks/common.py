"""What the study scripts in benchmarks/ share: running a command from the repository root with its time, the
checkout's commit, a paired comparison of two evaluated runs, and a results-file metric entry (minidp/tables.py).

Not a script: the scripts import it (`from common import ...`; python puts benchmarks/ on the path when it runs
one of them).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from minidp import compare, stats  # noqa: E402
from minidp.sweeps import checkout_commit as commit  # noqa: E402,F401 (the scripts import it from here)


def call(cmd, cwd=ROOT):
    """Run cmd (a list; paths are turned into text) with the repository on PYTHONPATH, print it and how long it
    took; its exit status."""
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    status = subprocess.run(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    print(f"  ({time.time() - start:.0f} s, exit {status})", flush=True)
    return status


def paired(a, b, metric):
    """(A - B, lo, hi) of a single-task metric over the scenes both runs evaluated (stats.paired_diff_ci)."""
    sa, sb = compare.read_scenes(a)[""], compare.read_scenes(b)[""]
    ia, ib = compare.aligned(sa, sb, "")
    return stats.paired_diff_ci(sa[metric][ia], sb[metric][ib])


def named_verdict(lo, hi, a, b, better="lower"):
    """The stats rule's word for an interval of A - B, with the runs' names in place of A and B."""
    return stats.verdict(lo, hi, better).replace("A better", f"{a} better").replace("B better", f"{b} better")


def entry(value, ci=None, digits=4):
    """A metric of a results file: {"value", "ci", "digits"}, rounded to 6 decimals."""
    return {"value": round(float(value), 6), "digits": digits,
            "ci": None if ci is None else [round(float(c), 6) for c in ci]}
