"""A new user's mistakes on train.py, sample.py, fit_scaling.py and the module CLIs (python -m minidp.world,
python -m minidp.ct_estimation): each is one line on stderr naming the key, flag or file, exit status 2, no
traceback, and an existing run directory passed to it is left byte-for-byte as it was (issue 15). That covers
argparse's own errors (one line through errors.ArgumentParser), errors from the OS (a file where a folder
should be, a folder where a file should be), and a checkpoint whose pickle would run code.

Most cases call `main([...])` in the test process (the same code path as the command line, minus torch's
start-up); a handful run as real subprocesses, two at a time, to check the command line itself.

Run: pytest -q tests/test_bad_input.py     (one micro run first, then 4 subprocesses two at a time)
"""

import concurrent.futures
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import fit_scaling  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402
from minidp import ct_estimation, world  # noqa: E402

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
    (["sample.num_images=2000"], "sample.num_images"),        # data.val_size is 1024
    (["train.device=tpu"], "train.device"),
    (["diffusion.beta_start=0.5"], "diffusion.beta_start"),   # above scaled_linear's beta_end 0.012
    (["sample.eta=-1"], "sample.eta"),
    (["train.warmup_steps=-1"], "train.warmup_steps"),
    (["diffusion.timestep_sampling=depth_relase"], "diffusion.timestep_sampling"),  # ADDP (issue 11): a typo
    (["train.augment=1", "diffusion.prediction=eps"], "train.augment"),      # augmentation needs x0-prediction
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
def run(tmp_path_factory, micro_run):
    """A small real run (config.yaml, log.jsonl, ckpt.pt, eval.json, figures: a copy of the suite's micro_run,
    tests/conftest.py) and its snapshot."""
    out = tmp_path_factory.mktemp("bad_input") / "run"
    shutil.copytree(micro_run, out)
    files = snapshot(out)
    assert {"ckpt.pt", "config.yaml", "log.jsonl", "eval.json"} <= set(files)
    return out, files


def assert_one_line_error(rc, err, key):
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert key in lines[0], err
    return lines[0]


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
    """The SUBPROCESS_CASES, one sample.py case and two argparse errors (a module CLI, a script with
    sub-commands) as real commands, two at a time: [((command, key), result)]."""
    out, _ = run
    jobs = [([str(ROOT / "train.py"), DEPTH, *MICRO, f"train.out_dir={out}", *TRAIN_CASES[i][0]], TRAIN_CASES[i][1])
            for i in SUBPROCESS_CASES] + [
        ([str(ROOT / "sample.py"), str(out), "sample.ensemble=0"], "sample.ensemble"),
        (["-m", "minidp.world", "--n", "0", "--out", str(out.parent / "world.png")], "--n"),
        ([str(ROOT / "fit_scaling.py"), "fit", str(out), "--bogus"], "--bogus"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def call(job):
        return subprocess.run([sys.executable, *job[0]], cwd=out.parent, env=env, capture_output=True, text=True,
                              timeout=120)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return [(job, result) for job, result in zip(jobs, pool.map(call, jobs))]


def test_command_line_bad_input_exits_2_with_one_line_and_no_traceback(run, command_line_results):
    out, files = run
    assert len(command_line_results) == len(SUBPROCESS_CASES) + 3
    for (command, key), result in command_line_results:
        assert_one_line_error(result.returncode, result.stderr, key)
        assert result.stdout == "", (command, result.stdout)
    assert snapshot(out) == files
    assert not (out.parent / "world.png").exists()


# ----------------------------------------------------------------------------------------------------------
# Flags: every script and module CLI parses with errors.ArgumentParser, whose error is one line
# (argparse's own prints the usage first: two lines). Then OS errors and a checkpoint that carries code.
# ----------------------------------------------------------------------------------------------------------

def exit_status(main, argv):
    """main(argv)'s exit status, whether main returns it or its parser raises SystemExit."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture
def places(tmp_path):
    """Paths the argv templates below name: {tmp}, {file} (a plain file where a folder is expected), {empty}
    (a folder with no ckpt.pt), {taken} (a folder named like a PNG), {inter} (valid ct_estimation input)."""
    (tmp_path / "a_file").write_text("a file where a folder should be")
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken.png").mkdir()
    Q = [[(i * 7) % 13 / 13 for i in range(20)], [(i * 5) % 17 / 17 for i in range(20)]]  # S = 2, N = 20
    (tmp_path / "inter.json").write_text(json.dumps({"timesteps": [999, 499], "Q": Q}))
    return {"tmp": tmp_path, "file": tmp_path / "a_file", "empty": tmp_path / "empty", "inter": tmp_path / "inter.json",
            "taken": tmp_path / "taken.png"}


# (CLI, argv template, what the one line must name). ct_estimation's bad intermediates files and fit_scaling's
# bad --y / --smooth values / missing folder / sweep files are in their own test files; these are the rest.
CLI_CASES = [
    ("world", ["--resolution", "7"], "--resolution"),
    ("world", ["--resolution", "big"], "--resolution"),
    ("world", ["--n", "0"], "--n"),
    ("world", ["--out", "{file}/world.png"], "--out"),                    # its folder is a file
    ("world", ["--n", "1", "--resolution", "16", "--out", "{taken}"], "taken.png"),  # a folder: the OS says no
    ("world", ["--bogus"], "--bogus"),
    ("ct_estimation", ["{inter}", "-o", "{tmp}/w.json", "--bogus"], "--bogus"),
    ("ct_estimation", ["{inter}"], "-o/--out"),
    ("ct_estimation", ["{inter}", "-o", "{tmp}/w.json", "--groups", "many"], "--groups"),
    ("ct_estimation", ["{inter}", "-o", "{tmp}/w.json", "--groups", "7"], "groups=7"),  # 7 does not divide T
    ("ct_estimation", ["{inter}", "-o", "{file}/w.json"], "a_file"),      # the OS refuses: the file is named
    ("fit_scaling", ["fit", "{file}"], "a_file"),                         # a file where a folder of runs goes
    ("fit_scaling", ["fit", "{tmp}", "--bogus"], "--bogus"),
    ("fit_scaling", ["fit", "{tmp}", "--smooth", "wide"], "--smooth"),
    ("fit_scaling", ["fitt", "{tmp}"], "fitt"),
    ("fit_scaling", [], "command"),
    ("train", [DEPTH, "--steps", "5"], "--steps"),                        # a flag where an override goes
    ("train", [], "config"),
    ("train", [DEPTH, *MICRO, "train.init_from={empty}", "train.out_dir={tmp}/run"], "train.init_from"),
]


CLI_MAINS = {"world": world.main, "ct_estimation": ct_estimation.main, "fit_scaling": fit_scaling.main,
             "train": train.main}


@pytest.mark.parametrize("name, argv, key", CLI_CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CLI_CASES])
def test_bad_flags_and_paths_of_every_cli_are_one_line_and_exit_2(places, capsys, name, argv, key):
    rc = exit_status(CLI_MAINS[name], [a.format(**places) for a in argv])
    line = assert_one_line_error(rc, capsys.readouterr().err, key)
    assert not (places["tmp"] / "w.json").exists() and not (places["tmp"] / "run").exists(), line  # nothing written
    assert places["file"].read_text().startswith("a file")


@pytest.mark.parametrize("argv, key", [
    (["--scene", "x"], "--scene"),
    (["--outt", "x"], "--outt"),
    (["--out", "{file}/eval"], "--out"),        # OSError from mkdir: the flag, the folder and the OS's reason
], ids=["--scene x", "unknown flag", "--out under a file"])
def test_sample_bad_flags_are_one_line_and_leave_the_run_untouched(run, places, capsys, argv, key):
    out, files = run
    capsys.readouterr()
    rc = exit_status(sample.main, [str(out), *[a.format(**places) for a in argv]])
    line = assert_one_line_error(rc, capsys.readouterr().err, key)
    assert snapshot(out) == files
    if key == "--out":
        assert "a_file" in line and "Not a directory" in line


def test_sample_on_a_folder_without_ckpt_pt_names_the_file_it_looked_for(places, capsys):
    rc = sample.main([str(places["empty"])])
    assert_one_line_error(rc, capsys.readouterr().err, str(places["empty"] / "ckpt.pt"))


class Plant:
    """Unpickling this object would create a file: the code a checkpoint must never run (as in test_checkpoint)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("script", ["train.py", "sample.py"])
def test_a_checkpoint_whose_pickle_runs_code_is_refused_by_the_scripts_and_its_code_never_runs(tmp_path, capsys,
                                                                                                 script):
    planted, evil = tmp_path / "planted.txt", tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": Plant(str(planted)), "ema": {}, "model_config": {}}, f, protocol=2)
    if script == "train.py":
        rc = train.main([DEPTH, *MICRO, f"train.init_from={evil}", f"train.out_dir={tmp_path / 'run'}"])
    else:
        rc = sample.main([str(evil)])
    line = assert_one_line_error(rc, capsys.readouterr().err, str(evil))
    assert ("train.init_from" if script == "train.py" else "sample.py") in line
    assert not planted.exists()
    assert not (tmp_path / "run").exists()
