"""A sweep's files and runs (minidp/sweeps.py): the run folders per seed, how seed folders group into a variant,
which direction of a y is better, and the verdict over seeds against the t-interval worked by hand. The sweep
end to end (training, resuming, fitting): tests/test_fit_scaling.py.

Run: pytest -q tests/test_sweeps.py
"""

import json
import subprocess
from pathlib import Path

import pytest

from minidp import sweeps


def test_one_seed_keeps_the_variant_folder_and_k_seeds_get_one_folder_each_with_their_seed():
    assert sweeps.seed_dirs(Path("out"), "tiny", 1) == [(Path("out/tiny"), [])]
    assert sweeps.seed_dirs(Path("out"), "tiny", 2) == [(Path("out/tiny/seed0"), ["train.seed=0"]),
                                                        (Path("out/tiny/seed1"), ["train.seed=1"])]


def test_a_folder_of_seed_runs_is_one_variant(tmp_path):
    for run in ("micro/seed0", "micro/seed1", "tiny"):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "log.jsonl").write_text("")
    groups = sweeps.find_runs([tmp_path])
    assert groups == {"micro": [tmp_path / "micro/seed0", tmp_path / "micro/seed1"], "tiny": [tmp_path / "tiny"]}


def test_which_values_are_better():
    assert [sweeps.direction(y) for y in ("loss", "eval.absrel", "eval.delta1", "eval.delta1_err")] == \
        ["lower", "lower", "higher", "lower"]


def test_the_verdict_over_seeds_is_the_t_interval_of_the_paired_differences():
    # differences -0.10, -0.12, -0.08: mean -0.10, s = 0.02, t(0.975, 2) = 4.303 -> half width 0.0497: all below 0
    assert sweeps.seed_verdict([0.90, 0.88, 0.92], [1.0, 1.0, 1.0], "lower") == "A better"
    assert sweeps.seed_verdict([0.90, 0.88, 0.92], [1.0, 1.0, 1.0], "higher") == "B better"
    # differences -0.10, +0.10, 0: the interval holds 0
    assert sweeps.seed_verdict([0.9, 1.1, 1.0], [1.0, 1.0, 1.0], "lower") == "no difference detected"
    assert sweeps.seed_verdict([0.9], [1.0], "lower") == "1 seed"  # no interval, no verdict
    assert sweeps.seed_verdict([0.9, 0.8], [1.0], "lower") == "-"  # unpaired: nothing to say


@pytest.mark.parametrize("bad, words", [("seeds: 0", "seeds must be a positive integer"),
                                        ("baseline: huge", "baseline 'huge' is not a variant"),
                                        ("colour: red", "unknown key 'colour'")])
def test_a_bad_sweep_file_is_one_line_naming_the_key(tmp_path, bad, words):
    root = Path(__file__).resolve().parent.parent / "configs"
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"config: {root / 'depth.yaml'}\nout: {tmp_path / 'runs'}\nvariants: {{tiny: []}}\n{bad}\n")
    with pytest.raises(sweeps.InputError, match=words):
        sweeps.read_sweep(sweep)


def commit_chain(repo, n):
    """A throwaway git repository with n empty commits in a row; their hashes, oldest first."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    hashes = []
    for k in range(n):
        subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", f"c{k}"], check=True)
        hashes.append(subprocess.run(git + ["rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                                     text=True).stdout.strip())
    return hashes


def test_a_multi_seed_study_trained_before_the_seed_fix_carries_the_caveat_and_one_after_it_does_not(
        tmp_path, monkeypatch):
    old, fix, new = commit_chain(tmp_path, 3)
    monkeypatch.setattr(sweeps, "SEED_FIX", fix)
    assert [sweeps.predates_seed_fix(c, tmp_path) for c in (old, fix, new, "0000000")] == [True, False, False, False]

    def study(commit, seeds):
        return {"runs": [{"seed": [0], "commit": new}, {"seed": seeds, "commit": commit}]}

    caveat = sweeps.seed_caveat(study(f"{new}, {old}", [0, 1, 2]), tmp_path)
    assert caveat.startswith("Seeds differ only in initial weights") and f"trained at {old}, before {fix}" in caveat
    assert new not in caveat
    assert sweeps.seed_caveat(study(new, [0, 1, 2]), tmp_path) is None
    assert sweeps.seed_caveat(study(old, [0]), tmp_path) is None  # one seed: nothing claimed about seeds


def test_every_committed_results_file_carries_the_caveat_its_commits_call_for():
    from minidp import tables
    if not sweeps.predates_seed_fix("b94e18f~1") or sweeps.predates_seed_fix("HEAD"):
        pytest.skip("not inside minidp's git history")
    for path in sorted(tables.RESULTS.glob("*.json")):
        study = json.loads(path.read_text())
        assert study.get("caveat") == sweeps.seed_caveat(study), path.name
