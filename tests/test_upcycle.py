"""Tests for minidp/upcycle.py: dense DiT -> MoE DiT conversion (sparse upcycling).

The reference is the dense model itself: with renormalised top-k weights, the upcycled model must compute
exactly what the dense model computes, for any router; without renormalisation it must not. Everything
that is not an MLP (widened inputs, task router, task label rows) must survive the conversion.

Run: python -m pytest -q tests/test_upcycle.py
"""

import pytest
import torch

from minidp.dit import Mlp, add_text, build_dit, make_multitask, widen_input
from minidp.moe import MoEFeedForward, build_moe, moe_aux
from minidp.upcycle import upcycle


def trained_looking_dense(depth=2, seed=0, **overrides):
    """A micro dense DiT with every parameter random: at DiT's init the adaLN-Zero gates and the zero
    head make the output 0 whatever the MLPs hold, which would make any equality test vacuous."""
    torch.manual_seed(seed)
    model = build_dit("micro", input_size=8, num_classes=10, depth=depth, **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def batch_for(model, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_groups * model.in_channels, 8, 8, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    return x, t, y


@pytest.mark.parametrize("num_experts", [4, 8])
@pytest.mark.parametrize("top_k", [1, 2])
def test_upcycled_moe_matches_dense_at_init(num_experts, top_k):
    dense = trained_looking_dense()
    moe = upcycle(dense, num_experts, top_k, generator=torch.Generator().manual_seed(0))
    x, t, y = batch_for(dense)
    with torch.no_grad():
        expected, got = dense(x, t, y), moe(x, t, y)
    assert expected.abs().mean() > 0.1   # a non-trivial function, not the all-zero DiT init
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert all(isinstance(b.mlp, MoEFeedForward) and len(b.mlp.experts) == num_experts for b in moe.blocks)


def test_upcycled_moe_differs_from_dense_without_renormalization():
    dense = trained_looking_dense()
    moe = upcycle(dense, 8, 2, renormalize=False, generator=torch.Generator().manual_seed(0))
    x, t, y = batch_for(dense)
    with torch.no_grad():
        diff = (moe(x, t, y) - dense(x, t, y)).abs().max()
    assert diff > 1e-2
    # Why: every MLP branch is scaled by the top-2 score mass, well below 1 for a small router.
    hidden = torch.randn(50, 32)
    scores = moe.blocks[0].mlp.route(hidden)[1].sum(dim=-1)  # (M,) sum of the 2 chosen weights
    assert scores.max() < 0.5


def test_upcycling_every_other_block_keeps_the_rest_dense_and_the_function():
    dense = trained_looking_dense(depth=4)
    moe = upcycle(dense, 4, 2, every=2)
    assert [type(b.mlp) for b in moe.blocks] == [Mlp, MoEFeedForward, Mlp, MoEFeedForward]
    x, t, y = batch_for(dense)
    with torch.no_grad():
        torch.testing.assert_close(moe(x, t, y), dense(x, t, y), rtol=1e-5, atol=1e-5)


def test_upcycling_keeps_widened_input_task_router_and_task_labels():
    dense = trained_looking_dense()
    widen_input(dense, 2)
    make_multitask(dense, 3)
    moe = upcycle(dense, 4, 2)
    for key in ("in_groups", "num_tasks", "num_classes", "hidden_size"):
        assert moe.config[key] == dense.config[key]
    torch.testing.assert_close(moe.y_embedder.embedding_table.weight, dense.y_embedder.embedding_table.weight)
    x, t, y = batch_for(dense)
    task = torch.tensor([0, 2, 1])
    with torch.no_grad():
        torch.testing.assert_close(moe(x, t, y, task=task), dense(x, t, y, task=task), rtol=1e-5, atol=1e-5)


def test_upcycling_a_text_model_keeps_its_text_path_and_function():
    dense = trained_looking_dense()
    add_text(dense, 12)
    with torch.no_grad():
        dense.text_embedder.proj.weight.normal_(0, 0.3)  # a trained-looking text path, not the zero init
    moe = upcycle(dense, 4, 2)
    assert moe.config["vocab_size"] == 12
    x, t, y = batch_for(dense)
    tokens = torch.tensor([[3, 5, 0], [11, 0, 0], [0, 0, 0]])  # the last row is the null text
    with torch.no_grad():
        expected = dense(x, t, y, tokens=tokens)
        assert not torch.allclose(expected, dense(x, t, y))  # the text acts
        torch.testing.assert_close(moe(x, t, y, tokens=tokens), expected, rtol=1e-5, atol=1e-5)


def test_router_is_drawn_from_n0_std_and_reproducible_with_a_generator():
    dense = trained_looking_dense(hidden_size=128, num_heads=4)   # 8 x 128 x 2 router weights to estimate std
    a = upcycle(dense, 8, 2, router_std=0.02, generator=torch.Generator().manual_seed(3))
    b = upcycle(dense, 8, 2, router_std=0.02, generator=torch.Generator().manual_seed(3))
    routers = torch.cat([blk.mlp.router.weight.flatten() for blk in a.blocks])
    assert abs(routers.std().item() / 0.02 - 1) < 0.1 and abs(routers.mean().item()) < 0.002
    for ba, bb in zip(a.blocks, b.blocks):
        torch.testing.assert_close(ba.mlp.router.weight, bb.mlp.router.weight, rtol=0, atol=0)


def test_upcycled_model_owns_its_weights_and_trains():
    dense = trained_looking_dense()
    moe = upcycle(dense, 4, 2).train()
    with torch.no_grad():
        dense.blocks[0].mlp.fc1.weight.zero_()    # the dense model may keep training elsewhere
    assert moe.blocks[0].mlp.experts[0].fc1.weight.abs().sum() > 0
    experts = moe.blocks[0].mlp.experts
    assert experts[0].fc1.weight.data_ptr() != experts[1].fc1.weight.data_ptr()   # E separate copies
    x, t, y = batch_for(dense)
    loss = moe(x, t, y).square().mean() + moe_aux(moe)[0]
    loss.backward()
    assert moe.blocks[0].mlp.router.weight.grad.abs().sum() > 0


def test_upcycling_something_that_is_not_a_dense_dit_is_refused_by_name():
    moe = build_moe("micro-4E2A", input_size=8, num_classes=10)
    with pytest.raises(ValueError, match="MoE"):
        upcycle(moe, 4, 2)
    with pytest.raises(ValueError, match="state dict"):
        upcycle(trained_looking_dense().state_dict(), 4, 2)
    with pytest.raises(ValueError, match="dense DiT, got Linear"):
        upcycle(torch.nn.Linear(3, 3), 4, 2)
    with pytest.raises(ValueError, match="top_k"):
        upcycle(trained_looking_dense(), 4, 5)


def test_balance_alpha_reaches_every_moe_layer_and_the_config():
    dense = trained_looking_dense()
    x, t, y = batch_for(dense)
    models = {a: upcycle(dense, num_experts=4, top_k=2, balance_alpha=a, generator=torch.Generator().manual_seed(0))
              for a in (0.0, 0.01, 0.5)}  # same router draw for all three
    aux = {}
    for a, m in models.items():
        m(x, t, y)
        assert m.config["balance_alpha"] == a
        aux[a] = moe_aux(m)[0].item()
    assert aux[0.0] == 0.0
    assert aux[0.01] > 0 and aux[0.5] == pytest.approx(50 * aux[0.01], rel=1e-5)  # linear in alpha
