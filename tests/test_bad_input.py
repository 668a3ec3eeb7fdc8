"""A new user's mistakes on train.py and sample.py: each is one line on stderr naming the key, exit status 2,
no traceback, and an existing run directory passed to it is left byte-for-byte as it was (issue 15).

Most cases call `train.main([...])` in the test process (the same code path as the command line, minus
torch's start-up); a handful run as real subprocesses, two at a time, to check the command line itself.

Run: pytest -q tests/test_bad_input.py     (one micro run first, then 2 subprocesses side by side: ~35 s on 2 busy cores)
"""

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sample  # noqa: E402
import train  # noqa: E402

DEPTH = str(ROOT / "configs" / "depth.yaml")
# The micro working set of tests/test_train.py: a 2-step depth fine-tune of the micro DiT at 16 px.
MICRO = ["model.preset=micro", "data.resolution=16", "data.train_size=64", "train.steps=2", "train.global_batch=4",
         "sample.steps=1", "sample.num_images=2", "sample.batch=2", "train.init_from="]

# (overrides after the working set, a key the one-line error must name). The catalogue first.
TRAIN_CASES = [
    (["train.steps=-5"], "train.steps"),
    (["train.global_batch=0"], "train.global_batch"),
    (["train.lr=nan"], "train.lr"),
    (["train.lr=-1"], "train.lr"),
    (["data.train_size=0"], "data.train_size"),
    (["data.resolution=7"], "data.resolution"),
    (["diffusion.timestep_weights=[1,-1]"], "diffusion.timestep_weights"),
    (["sample.steps=0"], "sample.steps"),
    (["sample.steps=5000"], "sample.steps"),
    (["sample.ensemble=0"], "sample.ensemble"),
    # more of the same kind
    (["data.resolution=17"], "data.resolution"),              # not divisible by micro's patch size 2
    (["diffusion.timestep_weights=[1,1,1]"], "diffusion.timestep_weights"),  # 3 groups do not divide T = 1000
    (["train.micro_batch=3"], "train.micro_batch"),           # global batch 4
    (["train.lr_final=1"], "train.lr_final"),                 # depth.yaml decays (exp) from lr 2e-3
    (["data.val_offset=10"], "data.val_offset"),              # validation scenes inside 0..63
    (["model.preset=mirco"], "model.preset"),
    (["train.ema_decay=2"], "train.ema_decay"),
    (["model.class_dropout_prob=-0.1"], "model.class_dropout_prob"),
    (["diffusion.T=1"], "diffusion.T"),
    (["diffusion.zero_terminal_snr=true", "diffusion.prediction=eps"], "diffusion.zero_terminal_snr"),
    (["train.mode=pretrain"], "data.task"),                   # depth.yaml's task cannot be pre-trained
    (["data.num_classes=0"], "data.num_classes"),
    (["sample.num_images=100"], "sample.num_images"),         # data.val_size is 64
    (["train.device=tpu"], "train.device"),
    (["diffusion.beta_start=0.5"], "diffusion.beta_start"),   # above scaled_linear's beta_end 0.012
    (["sample.eta=-1"], "sample.eta"),
    (["train.warmup_steps=-1"], "train.warmup_steps"),
]
SUBPROCESS_CASES = [10]  # indices into TRAIN_CASES that also run as `python train.py ...` (a cross-field rule)

SAMPLE_CASES = [
    pytest.param(["sample.steps=0"], "sample.steps", id="sample.steps=0"),
    pytest.param(["sample.steps=5000"], "sample.steps", id="sample.steps=5000"),
    pytest.param(["train.steps=5"], "train.steps", id="sample.py refuses train.steps"),
    pytest.param(["model.preset=tiny"], "model.preset", id="sample.py refuses model.preset"),
    pytest.param(["sample.ensemble=0"], "sample.ensemble", id="sample.ensemble=0"),
]


def snapshot(directory):
    """{relative path: bytes} of every file under `directory`: the run as it is on disk."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small real run (config.yaml, log.jsonl, ckpt.pt, eval.json, figures) and its snapshot."""
    out = tmp_path_factory.mktemp("bad_input") / "run"
    assert train.main([DEPTH, *MICRO, f"train.out_dir={out}"]) == 0
    files = snapshot(out)
    assert {"ckpt.pt", "config.yaml", "log.jsonl", "eval.json"} <= set(files)
    return out, files


def assert_one_line_error(rc, err, key):
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert key in lines[0], err


@pytest.mark.parametrize("overrides, key", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_bad_override_is_one_line_and_leaves_the_run_untouched(run, capsys, overrides, key):
    out, files = run
    capsys.readouterr()
    rc = train.main([DEPTH, *MICRO, f"train.out_dir={out}", *overrides])
    assert_one_line_error(rc, capsys.readouterr().err, key)
    assert snapshot(out) == files


@pytest.mark.parametrize("overrides, key", SAMPLE_CASES)
def test_sample_bad_override_is_one_line_and_leaves_the_run_untouched(run, capsys, overrides, key):
    out, files = run
    capsys.readouterr()
    rc = sample.main([str(out), *overrides])
    assert_one_line_error(rc, capsys.readouterr().err, key)
    assert snapshot(out) == files


@pytest.fixture(scope="module")
def command_line_results(run):
    """The SUBPROCESS_CASES and one sample.py case as real commands, two at a time: [(argv, key, result)]."""
    out, _ = run
    jobs = [([DEPTH, *MICRO, f"train.out_dir={out}", *TRAIN_CASES[i][0]], "train.py", TRAIN_CASES[i][1])
            for i in SUBPROCESS_CASES] + [([str(out), "sample.ensemble=0"], "sample.py", "sample.ensemble")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def call(job):
        argv, script, _ = job
        return subprocess.run([sys.executable, str(ROOT / script), *argv], cwd=out.parent, env=env,
                              capture_output=True, text=True, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return [(job, result) for job, result in zip(jobs, pool.map(call, jobs))]


def test_command_line_bad_input_exits_2_with_one_line_and_no_traceback(run, command_line_results):
    out, files = run
    assert len(command_line_results) == len(SUBPROCESS_CASES) + 1
    for (argv, script, key), result in command_line_results:
        assert_one_line_error(result.returncode, result.stderr, key)
        assert result.stdout == "", (script, argv, result.stdout)
    assert snapshot(out) == files
