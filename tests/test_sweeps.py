"""A sweep's files and runs (minidp/sweeps.py): the run folders per seed, how seed folders group into a variant,
which direction of a y is better, and the verdict over seeds against the t-interval worked by hand. The sweep
end to end (training, resuming, fitting): tests/test_fit_scaling.py.

Run: pytest -q tests/test_sweeps.py
"""

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
