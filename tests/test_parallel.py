"""minidp/parallel.py: device and backend choice, FSDP equals one process and its checkpoints resume anywhere,
train.compile equals eager, activation checkpointing equals the plain backward, the fast optimizer.

Run: pytest -q tests/test_parallel.py      (about a minute: 2 gloo ranks twice, train.py in-process a few times, one
torch.compile of the micro DiT in a train.py child started at collection (tests/conftest.py), ~40 s while inductor's
cache is cold). The CUDA-only tests skip without a GPU.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers import train_ranks, run_inprocess, wait_all  # noqa: E402
from minidp import dit, errors, parallel  # noqa: E402
from minidp.errors import InputError  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def run_two_ranks(out_dir, *extra):
    """train.py as 2 gloo ranks (forked children with torchrun's variables: tests/helpers.py); rank 0's stdout."""
    ranks = train_ranks(out_dir, *extra, cwd=out_dir.parent)
    code, err = wait_all(ranks)
    assert code == 0, err
    return ranks[0].out()


def losses(out_dir):
    return [json.loads(line)["loss"] for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def ckpt(out_dir):
    return torch.load(Path(out_dir) / "ckpt.pt", weights_only=True)


def assert_same_state(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), k


# ----------------------------------------------------------------------------------------------------------
# Device and backend
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus, local_ranks, expected", [
    (0, 1, "cpu"), (0, 2, "cpu"),
    (1, 1, "cuda:0"),
    (1, 2, "cpu"),      # nccl refuses two ranks on one GPU: both ranks run gloo on the CPU instead
    (2, 2, "cuda:1"),   # (local rank 1)
])
def test_auto_device_gives_every_local_rank_its_own_gpu_or_falls_back_to_cpu(monkeypatch, gpus, local_ranks,
                                                                              expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    local_rank = local_ranks - 1
    env = parallel.from_torchrun("auto", {"RANK": str(local_rank), "WORLD_SIZE": str(local_ranks),
                                          "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(local_ranks)})
    assert str(env.device) == expected
    assert env.backend == ("nccl" if expected.startswith("cuda") else "gloo")
    assert env.distributed and env.master == (local_rank == 0)


def test_explicit_cuda_with_fewer_gpus_than_local_ranks_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="2 local rank"):
        errors.choose_device("cuda", local_rank=1, local_world_size=2)


def test_one_process_without_torchrun_variables_is_not_distributed():
    env = parallel.from_torchrun("cpu", {})
    assert (env.rank, env.world_size, env.distributed, env.device.type) == (0, 1, False, "cpu")


# ----------------------------------------------------------------------------------------------------------
# FSDP through train.py: equal to one process, and one checkpoint format for all three
# ----------------------------------------------------------------------------------------------------------

def test_fsdp_two_gloo_ranks_equal_one_process_and_its_checkpoint_resumes_under_ddp_and_one_process(tmp_path,
                                                                                                   micro_run):
    # FSDP: 2 ranks x micro-batch 1 x 2 accumulation steps (so FSDP's gradient-sync switch is exercised too)
    # against 1 process x batch 4 (micro_run, tests/conftest.py), same initialisation and batch plan, 3 steps.
    shutil.copytree(micro_run, tmp_path / "one")
    out = run_two_ranks(tmp_path / "fsdp", "train.parallel=fsdp", "train.micro_batch=1")
    assert "2 fsdp rank(s) on cpu" in out
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "one"), rel=1e-5, abs=0)
    one, sharded = ckpt(tmp_path / "one"), ckpt(tmp_path / "fsdp")
    for key in ("model", "ema"):  # full, unsharded state dicts with DiT's keys
        assert_same_state(one[key], sharded[key], atol=1e-5)
    assert one["opt"]["param_groups"][0]["params"] == sharded["opt"]["param_groups"][0]["params"]
    assert one["opt"]["state"].keys() == sharded["opt"]["state"].keys()  # keyed by parameter index, like torch.optim
    for i, s in one["opt"]["state"].items():
        assert_same_state(s, sharded["opt"]["state"][i], atol=1e-6)

    # Resume the FSDP run to step 4 under DDP and in one process; the reference resumes the 1-process run
    # (resuming is exact: tests/test_train.py).
    for name in ("ref", "as_ddp", "as_one"):
        shutil.copytree(tmp_path / ("one" if name == "ref" else "fsdp"), tmp_path / name)
    assert run_inprocess(tmp_path / "ref", "train.steps=4") == 0
    run_two_ranks(tmp_path / "as_ddp", "train.parallel=ddp", "train.steps=4")
    assert run_inprocess(tmp_path / "as_one", "train.steps=4") == 0
    ref = ckpt(tmp_path / "ref")
    for name in ("as_ddp", "as_one"):
        assert losses(tmp_path / name)[-1] == pytest.approx(losses(tmp_path / "ref")[-1], rel=1e-5)
        assert_same_state(ref["model"], ckpt(tmp_path / name)["model"], atol=1e-5)
    # and the step really changed the weights (equal checkpoints of a step that did nothing would prove nothing)
    assert any(not torch.allclose(ref["model"][k], one["model"][k]) for k in ref["model"])


# ----------------------------------------------------------------------------------------------------------
# The fast step: compile, activation checkpointing, the optimizer
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_training_matches_eager_losses(micro_run, compiled_run):
    # Inductor fuses and reorders float32 reductions, so the two agree to rounding, not bit for bit:
    # 1e-4 relative over 3 steps at lr 1e-3 (measured here, torch 2.13 CPU: the losses came out identical).
    # The compiled run is train.py with train.compile=true, started when the suite starts; the eager one is
    # micro_run (tests/conftest.py).
    eager, compiled = losses(micro_run), losses(compiled_run)
    assert len(compiled) == 3
    assert compiled == pytest.approx(eager, rel=1e-4)
    assert_same_state(ckpt(micro_run)["model"], ckpt(compiled_run)["model"], atol=1e-4)


def test_activation_checkpointing_gives_the_plain_backward_gradients():
    torch.manual_seed(0)
    model = dit.build_dit("micro", input_size=16, in_channels=3, num_classes=10, learn_sigma=False)
    with torch.no_grad():  # off adaLN-Zero's zero init, so every block gets a gradient
        for p in model.parameters():
            p.normal_(0, 0.1)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 700]), torch.tensor([1, 4])

    def grads(recompute):
        model.zero_grad()
        model.checkpoint_activations = recompute
        model(x, t, y, force_drop_ids=torch.zeros(2)).square().mean().backward()  # no random label drop
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys() and len(plain) > 10
    assert_same_state(plain, recomputed, atol=1e-6)
    assert all(g.abs().sum() > 0 for n, g in plain.items() if n.startswith("blocks."))


def test_optimizer_is_fused_adamw_on_cpu_with_the_configured_hyperparameters():
    opt = parallel.make_optimizer(torch.nn.Linear(3, 2), 3e-4, 0.01, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] and not opt.defaults["foreach"]
    assert (opt.defaults["lr"], opt.defaults["weight_decay"]) == (3e-4, 0.01)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_fused_adamw_takes_the_same_steps_as_foreach(device):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(16, 16).to(device), torch.nn.Linear(16, 16).to(device)
    b.load_state_dict(a.state_dict())
    start = a.weight.detach().clone()
    fused = parallel.make_optimizer(a, 1e-2, 0.01, torch.device(device))
    foreach = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.01, foreach=True)
    assert fused.defaults["fused"]
    x = torch.randn(8, 16, device=device)
    for _ in range(5):
        for model, opt in ((a, fused), (b, foreach)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    assert_same_state(a.state_dict(), b.state_dict(), atol=1e-6)
    assert (a.weight - start).abs().max() > 1e-3  # the steps moved the weights


@cuda
def test_init_turns_on_tf32_for_float32_matmuls_on_cuda():
    parallel.init(parallel.Env(device=torch.device("cuda", 0)))
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


@cuda
def test_train_py_on_one_gpu_matches_the_cpu_losses_within_bf16_rounding(tmp_path):
    assert run_inprocess(tmp_path / "cpu", "train.device=cpu") == 0
    assert run_inprocess(tmp_path / "gpu", "train.device=cuda") == 0
    assert losses(tmp_path / "gpu") == pytest.approx(losses(tmp_path / "cpu"), rel=3e-2)  # bf16 autocast on CUDA


def test_gpu_depth_config_passes_every_rule_and_asks_for_the_fast_path():
    from minidp import config

    c = config.load_config(ROOT / "configs" / "gpu" / "depth.yaml")
    assert (c.data.task, c.train.device, c.train.compile) == ("depth", "cuda", True)
    assert c.data.resolution // config.PRESETS[c.model.preset]["patch_size"] == 16  # 256 tokens, as DiT at 256 px
