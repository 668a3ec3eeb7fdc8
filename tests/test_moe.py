"""Tests for minidp/moe.py: the MoE feed-forward layer, its balance loss, the MoE DiT and its presets.

Each claim is checked against an independent reference: a naive per-token loop written here (dispatch and
its gradients), hand-computed closed forms (balance loss), the dense / text-less model. Parameter and MAC
accounting (moe_params, moe_macs) is tested in test_compute.py.

Run: python -m pytest -q tests/test_moe.py
"""

import pytest
import torch
import torch.nn.functional as F

from minidp.checkpoint import load_dit_state_dict
from minidp.dit import Mlp, add_text
from minidp.moe import DiTMoE, DiTMoE_models, MoEFeedForward, SwiGLU, build_moe, moe_aux


def naive_moe(layer, x):
    """Reference MoE written token by token, straight from the definition (no sorting, no scatter)."""
    B, N, D = x.shape
    rows = []
    for token in x.reshape(B * N, D):
        scores = torch.softmax(layer.router.weight @ token, dim=0)
        weights, ids = torch.topk(scores, layer.top_k)
        if layer.renormalize:
            weights = weights / weights.sum()
        y = sum(w * layer.experts[int(e)](token[None])[0] for w, e in zip(weights, ids))
        if layer.shared is not None:
            y = y + layer.shared(token[None])[0]
        rows.append(y)
    return torch.stack(rows).reshape(B, N, D)


# ------------------------------------------------------------------------------------------------ experts

def test_swiglu_matches_its_formula_and_has_no_bias():
    torch.manual_seed(0)
    f = SwiGLU(6, 10)
    x = torch.randn(3, 6)
    a, b, c = f.gate_proj.weight, f.up_proj.weight, f.down_proj.weight
    expected = ((x @ a.T) * torch.sigmoid(x @ a.T) * (x @ b.T)) @ c.T   # silu(z) = z * sigmoid(z)
    torch.testing.assert_close(f(x), expected, rtol=1e-5, atol=1e-6)
    assert all(m.bias is None for m in (f.gate_proj, f.up_proj, f.down_proj))


# ----------------------------------------------------------------------------------------------- dispatch

@pytest.mark.parametrize("expert,num_shared,renormalize,top_k", [
    ("gelu", 0, False, 2), ("swiglu", 2, False, 2), ("gelu", 1, True, 3), ("swiglu", 0, True, 1)])
def test_dispatch_matches_naive_per_token_loop_with_gradients(expert, num_shared, renormalize, top_k):
    torch.manual_seed(0)
    layer = MoEFeedForward(8, num_experts=5, top_k=top_k, hidden_dim=12, expert=expert,
                           num_shared=num_shared, renormalize=renormalize)
    # A router with large weights spreads tokens unevenly: some experts get many pairs, and with top_k=1
    # one gets none (asserted below), which exercises the empty-slice path.
    with torch.no_grad():
        layer.router.weight.mul_(4)
    x = torch.randn(2, 7, 8, requires_grad=True)
    g = torch.randn(2, 7, 8)  # a random cotangent, so every output entry matters to the gradient

    params = [x] + list(layer.parameters())
    y = layer(x)
    if top_k == 1:
        assert (layer.last_aux["load"] == 0).any()
    grads = torch.autograd.grad((y * g).sum(), params)
    y_ref = naive_moe(layer, x)
    grads_ref = torch.autograd.grad((y_ref * g).sum(), params, allow_unused=True)

    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for p, a, b in zip(params, grads, grads_ref):
        b = torch.zeros_like(p) if b is None else b   # an expert no token chose gets a zero gradient
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_renormalized_copies_of_one_expert_equal_that_expert():
    # The upcycling identity at the layer level: K weights summing to 1 times E identical MLPs = the MLP.
    torch.manual_seed(0)
    dense = Mlp(8, 16)
    layer = MoEFeedForward(8, num_experts=4, top_k=2, hidden_dim=16, renormalize=True)
    for e in layer.experts:
        e.load_state_dict(dense.state_dict())
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-6)
    layer.renormalize = False  # DiT-MoE's weights: the top-2 of 4 softmax scores sum to < 1
    assert not torch.allclose(layer(x), dense(x), atol=1e-3)


# ------------------------------------------------------------------------------------------ balance loss

@pytest.mark.parametrize("num_experts,top_k", [(4, 1), (8, 2), (5, 3)])
def test_balance_loss_equals_alpha_under_uniform_router(num_experts, top_k):
    # Zero router -> every score is 1/E, so sum_e f_e P_e = (1/E) sum_e f_e = (1/E) * E = 1, whichever
    # experts topk's tie-breaking picks (the f_e always sum to E).
    layer = MoEFeedForward(6, num_experts, top_k, balance_alpha=0.03)
    torch.nn.init.zeros_(layer.router.weight)
    layer(torch.randn(3, 4, 6))
    aux = layer.last_aux
    torch.testing.assert_close(aux["balance_loss"], torch.tensor(0.03))
    assert aux["load"].shape == (num_experts,)
    torch.testing.assert_close(aux["load"].sum(), torch.tensor(1.0))


def test_balance_loss_matches_hand_computation_when_all_tokens_pick_one_expert():
    # E = 2, K = 1, router rows (+1, 0) and (-1, 0); tokens with positive first coordinate a all go to
    # expert 0 with score sigmoid(2a). Then f = (2, 0), P_0 = mean sigmoid(2a): aux = alpha * 2 * P_0.
    layer = MoEFeedForward(2, num_experts=2, top_k=1, balance_alpha=0.01)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    a = torch.tensor([0.5, 1.0, 2.0])
    x = torch.stack([a, torch.zeros(3)], dim=-1)[None]   # (1, 3, 2)
    layer(x)
    expected = 0.01 * 2 * torch.sigmoid(2 * a).mean()
    torch.testing.assert_close(layer.last_aux["balance_loss"], expected)
    torch.testing.assert_close(layer.last_aux["load"], torch.tensor([1.0, 0.0]))


def test_balance_loss_gradient_reaches_router_only_through_scores():
    torch.manual_seed(0)
    layer = MoEFeedForward(6, num_experts=4, top_k=2)
    x = torch.randn(2, 5, 6)
    layer(x)
    (grad,) = torch.autograd.grad(layer.last_aux["balance_loss"], layer.router.weight)
    # Independent recomputation: f from the (fixed) top-k counts, P through the softmax.
    w = layer.router.weight.detach().clone().requires_grad_(True)
    scores = torch.softmax(x.reshape(-1, 6) @ w.T, dim=-1)
    counts = F.one_hot(scores.topk(2, dim=-1).indices.reshape(-1), 4).sum(0).float()
    ref = 0.01 * (4 * counts / counts.sum() * scores.mean(0)).sum()
    (grad_ref,) = torch.autograd.grad(ref, w)
    torch.testing.assert_close(grad, grad_ref)
    assert grad.abs().sum() > 0


def test_moe_aux_sums_layers_and_stacks_loads():
    torch.manual_seed(0)
    model = torch.nn.Sequential(MoEFeedForward(6, 4, 2), MoEFeedForward(6, 4, 2))
    model(torch.randn(2, 3, 6))
    balance, loads = moe_aux(model)
    torch.testing.assert_close(balance, model[0].last_aux["balance_loss"] + model[1].last_aux["balance_loss"])
    assert loads.shape == (2, 4) and not loads.requires_grad
    dense_balance, dense_loads = moe_aux(Mlp(6, 8))
    assert float(dense_balance) == 0.0 and dense_loads.numel() == 0


def test_every_parameter_gets_a_gradient_even_when_experts_get_no_token():
    # 2 tokens, top-1 of 16: at least 14 experts get nothing, yet they run on an empty slice, so DDP sees
    # every parameter used (zero gradient) and needs no find_unused_parameters.
    torch.manual_seed(0)
    layer = MoEFeedForward(8, num_experts=16, top_k=1, num_shared=1)
    layer(torch.randn(1, 2, 8)).sum().backward()
    assert (layer.last_aux["load"] == 0).sum() >= 14
    assert [name for name, p in layer.named_parameters() if p.grad is None] == []


def test_layer_can_be_deep_copied_after_a_training_forward():
    # train.py builds its EMA model with copy.deepcopy; the stored aux tensors belong to a graph.
    import copy

    layer = MoEFeedForward(6, 4, 2)
    layer(torch.randn(2, 3, 6))
    twin = copy.deepcopy(layer)
    assert twin.last_aux is None and layer.last_aux is not None
    torch.testing.assert_close(twin.router.weight, layer.router.weight)


def test_moe_aux_before_any_forward_is_an_error():
    with pytest.raises(RuntimeError, match="forward"):
        moe_aux(MoEFeedForward(6, 4, 2))


# ------------------------------------------------------------------------------------------------ MoE DiT

def tiny_batch(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.in_groups * model.in_channels
    x = torch.randn(batch, c, model.input_size, model.input_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    return x, t, y


def test_moe_dit_replaces_mlps_of_every_block_or_every_other_block():
    every = build_moe("micro-4E2A", input_size=8, num_classes=10)
    assert all(isinstance(b.mlp, MoEFeedForward) for b in every.blocks)
    other = build_moe("micro-4E2A", input_size=8, num_classes=10, depth=4, moe_every=2)
    assert [type(b.mlp) for b in other.blocks] == [Mlp, MoEFeedForward, Mlp, MoEFeedForward]
    layer = every.blocks[0].mlp   # DiT-MoE's expert: SwiGLU of width 4D, shared SwiGLU of width 2D
    assert isinstance(layer.experts[0], SwiGLU) and layer.experts[0].gate_proj.weight.shape == (128, 32)
    assert layer.shared.gate_proj.weight.shape == (64, 32) and not layer.renormalize


def test_moe_dit_config_rebuilds_the_same_architecture():
    model = build_moe("micro-4E2A", input_size=8, num_classes=10, moe_every=2, renormalize=True)
    rebuilt = DiTMoE(**model.config)
    load_dit_state_dict(rebuilt, model.state_dict())   # strict: same keys and shapes
    x, t, y = tiny_batch(model)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x, t, y), model(x, t, y))


def test_moe_dit_with_text_starts_from_its_text_less_function_and_rebuilds_from_config():
    model = build_moe("micro-4E2A", input_size=8, num_classes=10).eval()
    with torch.no_grad():
        for p in model.parameters():  # nonzero everywhere, so the zero-initialised text projection is the test
            p.normal_(0, 0.2)
    x, t, y = tiny_batch(model)
    tokens = torch.tensor([[4, 2, 0], [7, 0, 0]])
    before = model(x, t, y)
    add_text(model, 8)
    torch.testing.assert_close(model(x, t, y, tokens=tokens), before, atol=1e-6, rtol=0)
    rebuilt = DiTMoE(**model.config).eval()
    assert rebuilt.config["vocab_size"] == 8
    load_dit_state_dict(rebuilt, model.state_dict())
    torch.testing.assert_close(rebuilt(x, t, y, tokens=tokens), model(x, t, y, tokens=tokens))
    built = build_moe("micro-4E2A", input_size=8, num_classes=10, vocab_size=8)  # built with text from the start
    assert built.state_dict().keys() == model.state_dict().keys()


def test_moe_dit_trains_router_and_reports_per_layer_loads():
    torch.manual_seed(0)
    model = build_moe("micro-4E2A", input_size=8, num_classes=10)
    # adaLN-Zero makes every block the identity at init; open the gates so the MoE branch matters.
    for block in model.blocks:
        torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.1)
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)
    x, t, y = tiny_batch(model)
    out = model(x, t, y)
    balance, loads = moe_aux(model)
    assert out.shape == (2, 8, 8, 8) and loads.shape == (2, 4)
    torch.testing.assert_close(loads.sum(dim=1), torch.ones(2))
    (out.square().mean() + balance).backward()
    assert all(b.mlp.router.weight.grad.abs().sum() > 0 for b in model.blocks)


# --------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,name", [
    (dict(num_experts=4, top_k=5), "top_k"), (dict(num_experts=0, top_k=1), "num_experts"),
    (dict(num_experts=4, top_k=0), "top_k"), (dict(num_experts=4, top_k=2, expert="relu"), "expert"),
    (dict(num_experts=4, top_k=2, num_shared=-1), "num_shared")])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MoEFeedForward(8, **kwargs)


def test_bad_model_arguments_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="moe_every"):
        build_moe("micro-4E2A", input_size=8, moe_every=3)   # micro has depth 2
    with pytest.raises(ValueError, match="tiny-8E2A"):
        build_moe("tiny-8E3A")                               # the error lists the valid presets
    assert set(DiTMoE_models) >= {"DiT-S/2-8E2A", "DiT-S/2-16E2A", "DiT-B/2-8E2A", "DiT-L/2-8E2A",
                                  "DiT-XL/2-8E2A", "tiny-8E2A"}


def test_layer_runs_under_bf16_autocast_close_to_float32():
    # Training on CUDA uses bf16 autocast; the CPU autocast exercises the same mixed-dtype scatter-add.
    torch.manual_seed(0)
    layer = MoEFeedForward(16, num_experts=4, top_k=2, expert="swiglu", num_shared=2)
    x = torch.randn(2, 6, 16)
    reference = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        y.float().square().mean().backward()
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)
    assert layer.router.weight.grad is not None
