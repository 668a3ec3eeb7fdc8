"""Tests for minidp/compute.py: parameter counts and analytic MACs of dense and MoE DiTs.

Each claim is checked against an independent reference: parameter counts against the released DiT sizes,
a closed-form count, the scaling paper's Table 1 (dense) and Table 2 (MoE); MACs against
torch.utils.flop_counter.FlopCounterMode run on the model, and DiT's reported 118.6 "Gflops" for XL/2.
Big presets are built on the meta device (no memory, no init cost).

Run: python -m pytest -q tests/test_compute.py      (about 10 s on an idle 2-core machine)
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from helpers import dit_inputs
from minidp.compute import count_params, dit_macs, model_macs, moe_macs, moe_params
from minidp.dit import DIT_PRESETS, build_dit, make_multitask, widen_input
from minidp.moe import build_moe


def micro(**overrides):
    """The unit-test preset at 8x8 with 10 classes (tiny label table)."""
    return build_dit("micro", **{"input_size": 8, "num_classes": 10, **overrides})


def random_tokens(batch=3, length=5, vocab=20, seed=2):
    """Token ids with padding (0) mixed in, every row keeping at least one real token."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, length), generator=g)
    tokens[:, 0] = torch.randint(1, vocab, (batch,), generator=g)
    return tokens


def flop_counter_macs(model, batch, **forward_kwargs):
    """MACs of one forward as counted by torch's FlopCounterMode (FLOPs / 2). The math attention backend
    decomposes attention into counted matmuls (the fused CPU kernel has no FLOP formula)."""
    x, t, y = dit_inputs(model, batch)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, y, **forward_kwargs)
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "name, millions", [("DiT-S/2", 32.96), ("DiT-B/2", 130.5), ("DiT-L/2", 458.1), ("DiT-XL/2", 675.1)]
)
def test_param_counts_match_released_dit(name, millions):
    with torch.device("meta"):
        model = build_dit(name)
    D, depth, p, N = model.hidden_size, model.depth, model.patch_size, 256
    # Closed form: per block qkv 3D^2+3D, proj D^2+D, fc1 4D^2+4D, fc2 4D^2+D, adaLN 6D^2+6D.
    trainable = (
        (4 * p * p * D + D)  # patch conv
        + (256 * D + D + D * D + D)  # timestep MLP
        + 1001 * D  # label table with null row
        + depth * (18 * D * D + 15 * D)
        + (2 * D * D + 2 * D) + (D * p * p * 8 + p * p * 8)  # final adaLN + linear
    )  # fmt: skip
    assert count_params(model) == trainable
    # DiT's reported figures (printed by its train.py) count every parameter, the frozen pos_embed included.
    assert count_params(model, trainable_only=False) == trainable + N * D
    decimals = 2 if millions < 100 else 1
    assert round(count_params(model, trainable_only=False) / 1e6, decimals) == millions


@pytest.mark.parametrize(
    "name, params", [("a1", 14.8e6), ("a2", 77.2e6), ("a3", 215e6), ("a4", 458e6), ("a5", 1.2e9), ("a6", 1.9e9)]
)
def test_scaling_paper_family_within_3_percent_of_table_1(name, params):
    with torch.device("meta"):
        model = build_dit(name)
    assert model.num_heads == 16 and model.patch_size == 2
    assert abs(count_params(model) / params - 1) < 0.03


@pytest.mark.parametrize("name,total,active", [
    ("DiT-S/2-8E2A", 199e6, 71e6), ("DiT-S/2-16E2A", 369e6, 71e6), ("DiT-B/2-8E2A", 796e6, None),
    ("DiT-L/2-8E2A", 2.8e9, 1.0e9)])  # fmt: skip
def test_parameter_counts_match_paper_table2(name, total, active):
    # Paper Table 2 / REFERENCE.md §3 (256 px: 32x32x4 latents, 1000 classes). Meta device: no memory.
    with torch.device("meta"):
        model = build_moe(name)
    counts = moe_params(model)
    assert abs(counts["total"] / total - 1) < 0.02, counts
    if active is not None:
        assert abs(counts["active"] / active - 1) < 0.02, counts


# ---------------------------------------------------------------------------------------------- dense MACs


@pytest.mark.parametrize("name", ["micro", "tiny", "a1"])
@pytest.mark.parametrize("input_size", [8, 16])
def test_analytic_macs_match_flop_counter(name, input_size):
    model = build_dit(name, input_size=input_size, num_classes=10)
    x, t, y = dit_inputs(model, batch=2)
    # The fused CPU attention kernel has no flop formula; the math backend runs it as counted bmm's.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, y)
    macs = counter.get_total_flops() / 2
    assert abs(dit_macs(model, batch=2) / macs - 1) < 0.02


def test_router_model_costs_one_embedding_per_sample():
    model = make_multitask(widen_input(micro(), 2), 3)
    x, t, y = dit_inputs(model, batch=4, groups=2)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, y, task=torch.tensor([0, 2, 2, 1]))
    assert abs(dit_macs(model, batch=4) / (counter.get_total_flops() / 2) - 1) < 0.02


def test_text_path_macs_match_flop_counter():
    counted = {vocab: (flop_counter_macs(micro(vocab_size=vocab), 2, tokens=random_tokens(batch=2) if vocab else None),
                       dit_macs(micro(vocab_size=vocab), batch=2)) for vocab in (0, 20)}  # fmt: skip
    # the text path alone (a few hundred MACs, below the 2 % tolerance of the whole-model checks): exact
    assert counted[20][0] - counted[0][0] == counted[20][1] - counted[0][1] == 2 * 32 * 32  # B * D^2


def test_xl2_256px_macs_match_dit_paper_118_6_gflops():
    # DiT's defaults are XL/2's: 32x32x4 latents (256 px), learn_sigma; a config dict needs no model
    assert round(dit_macs(DIT_PRESETS["DiT-XL/2"]) / 1e9, 1) == 118.6


# ---------------------------------------------------------------------------------------------- MoE MACs


def test_moe_analytic_macs_match_flop_counter():
    # Blocks 1 and 3 are MoE, 0 and 2 dense, so both kinds of block are counted. Both sides count every
    # matmul and nothing else, so they agree exactly (the acceptance bar was 2 %).
    torch.manual_seed(0)
    kwargs = dict(input_size=8, num_classes=10, depth=4, moe_every=2)
    model = build_moe("micro-4E2A", **kwargs)
    assert moe_macs(model, batch=2)["active"] == flop_counter_macs(model, batch=2)
    # "total" = every token through every expert: what a top-4-of-4 model actually computes.
    everything = flop_counter_macs(build_moe("micro-4E2A", top_k=4, **kwargs), batch=2)
    assert moe_macs(model, batch=2)["total"] == everything
    assert model_macs(model) == moe_macs(model)["active"] and model_macs(micro()) == dit_macs(micro())


def test_moe_text_model_macs_match_flop_counter():
    model = build_moe("micro-4E2A", input_size=8, num_classes=10, vocab_size=20)
    assert moe_macs(model, batch=2)["active"] == flop_counter_macs(model, 2, tokens=random_tokens(batch=2))


def test_moe_macs_of_a_dense_model_points_to_dit_macs():
    with pytest.raises(ValueError, match="num_experts.*dit_macs"):
        moe_macs(micro())
    with pytest.raises(ValueError, match=r"dit_macs counts dense DiTs; unknown config keys .*'num_experts'"):
        dit_macs(build_moe("micro-4E2A", input_size=8))


def test_equal_active_compute_pairs_cost_the_same_per_token():
    # §3.2 at equal active compute (configs/sweeps/moe_equal_active.yaml): each MoE against the dense model of its
    # active MACs per token, counted by FlopCounterMode on the models themselves, within 1 %.
    kwargs = dict(input_size=32, in_channels=3, num_classes=10)
    for moe_name, dense_name in (("tiny-8E2A-slim", "tiny"), ("tiny-8E2A", "tiny-mlp15")):
        torch.manual_seed(0)
        sparse, dense = build_moe(moe_name, **kwargs), build_dit(dense_name, **kwargs)
        assert abs(flop_counter_macs(sparse, batch=2) / flop_counter_macs(dense, batch=2) - 1) < 0.01
        assert count_params(sparse) > 2 * count_params(dense)  # the MoE's extra parameters are what is tested
