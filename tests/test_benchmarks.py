"""The benchmark scripts call the same functions as train.py; when a signature there changes, a benchmark that is
only run by hand breaks silently (bench_train's profiled step did, after recipe.loss lost its model argument).
These run each script's core on the micro model for a step or two."""

import importlib.util

import pytest

from helpers import MICRO, ROOT
from minidp import config


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("objective", ["diffusion", "e2e"])
def test_bench_train_profiles_every_phase_of_the_step(objective):
    bench = load_script("bench_train")
    cfg = config.load_config(ROOT / "configs" / "depth.yaml",
                             [*MICRO, f"train.objective={objective}", "train.augment=0", "sample.ensemble=1"])
    wall, phases, kinds, model = bench.profile_step(cfg, steps=2, warmup=1)
    ran = {"plan", "batch", "forward", "loss", "backward", "optimizer", "ema"}
    assert wall > 0 and all(phases.get(p, 0.0) > 0 for p in ran), phases
    assert sum(kinds.values()) > 0
    shapes = bench.matmul_shapes(cfg, model)
    assert shapes and all(len(s) == 4 and min(s) > 0 for s in shapes)
