"""Tests for minidp/dit.py: the dense DiT, its checkpoint compatibility, widening, the task router and text.

Each claim is checked against an independent reference: state-dict keys against the released DiT key list
written out here, attention against an explicit softmax, widening, routing and the text path against the
unwidened / single-embedder / text-less model. Weights are randomised wherever DiT's zero init would make a
check vacuous. Big presets are built on the meta device (no memory, no init cost). Sizes and MACs are in
test_compute.py, the embedders in test_embed.py.

Run: python -m pytest -q tests/test_dit.py      (about 10 s on an idle 2-core machine)
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import dit_inputs
from minidp import ddim
from minidp.checkpoint import CheckpointMismatchError, load_dit_state_dict
from minidp.dit import (
    DiT,
    Attention,
    add_text,
    build_dit,
    make_multitask,
    task_label,
    widen_input,
)


def micro(**overrides):
    """The unit-test preset at 8x8 with 10 classes (tiny label table)."""
    return build_dit("micro", **{"input_size": 8, "num_classes": 10, **overrides})


@torch.no_grad()
def randomise(model, seed=0, std=0.1):
    """Give every trainable parameter random values, so zero-initialised paths are exercised."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def released_dit_shapes(depth, D, p, C=4, num_classes=1000, tokens=256):
    """Key -> shape of a released DiT checkpoint (REFERENCE.md Sec. 2; learn_sigma, so 2C output channels)."""
    shapes = {
        "pos_embed": (1, tokens, D),
        "x_embedder.proj.weight": (D, C, p, p),
        "x_embedder.proj.bias": (D,),
        "t_embedder.mlp.0.weight": (D, 256),
        "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D),
        "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (num_classes + 1, D),
    }
    for n in range(depth):
        shapes.update({
            f"blocks.{n}.attn.qkv.weight": (3 * D, D),
            f"blocks.{n}.attn.qkv.bias": (3 * D,),
            f"blocks.{n}.attn.proj.weight": (D, D),
            f"blocks.{n}.attn.proj.bias": (D,),
            f"blocks.{n}.mlp.fc1.weight": (4 * D, D),
            f"blocks.{n}.mlp.fc1.bias": (4 * D,),
            f"blocks.{n}.mlp.fc2.weight": (D, 4 * D),
            f"blocks.{n}.mlp.fc2.bias": (D,),
            f"blocks.{n}.adaLN_modulation.1.weight": (6 * D, D),
            f"blocks.{n}.adaLN_modulation.1.bias": (6 * D,),
        })  # fmt: skip
    shapes.update({
        "final_layer.linear.weight": (p * p * 2 * C, D),
        "final_layer.linear.bias": (p * p * 2 * C,),
        "final_layer.adaLN_modulation.1.weight": (2 * D, D),
        "final_layer.adaLN_modulation.1.bias": (2 * D,),
    })  # fmt: skip
    return shapes


# ---------------------------------------------------------------------------------------------- checkpoints


def test_state_dict_keys_and_shapes_are_the_released_ones_for_xl2():
    with torch.device("meta"):
        model = build_dit("DiT-XL/2")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == released_dit_shapes(depth=28, D=1152, p=2)
    # strict load of a released-format state dict (meta tensors: shapes and keys only, nothing allocated)
    sd = {k: torch.empty(s, device="meta") for k, s in released_dit_shapes(depth=28, D=1152, p=2).items()}
    load_dit_state_dict(model, sd)


def test_released_format_s2_state_dict_loads_strict_and_sets_every_weight():
    shapes = released_dit_shapes(depth=12, D=384, p=2)
    assert len(shapes) == 132  # REFERENCE.md: DiT-S/2 has 132 keys
    sd = {k: torch.full(s, float(i)) for i, (k, s) in enumerate(shapes.items())}
    model = build_dit("DiT-S/2")
    load_dit_state_dict(model, sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_loading_another_architecture_lists_missing_and_unexpected_keys():
    sd = {"extra.weight": torch.zeros(1), **build_dit("micro", input_size=8, depth=3).state_dict()}
    with pytest.raises(CheckpointMismatchError) as err:  # also a ValueError
        load_dit_state_dict(micro(depth=2), sd)
    msg = str(err.value)
    assert "missing" not in msg  # depth 2 keys are all in a depth-3 dict
    assert "11 unexpected keys: extra.weight, blocks.2.attn.qkv.weight" in msg and "(+6 more)" in msg
    assert "y_embedder.embedding_table.weight: checkpoint (1001, 32) vs model (11, 32)" in msg
    with pytest.raises(ValueError, match="missing keys: blocks.2.attn.qkv.weight"):
        load_dit_state_dict(micro(depth=3), micro(depth=2).state_dict())
    with pytest.raises(ValueError, match=r"training checkpoint.*ckpt\['ema'\]"):
        load_dit_state_dict(micro(), {"model": {}, "ema": {}, "opt": {}, "step": 0})


def test_config_rebuilds_the_architecture_after_widening_and_routing():
    model = make_multitask(widen_input(micro(), 3), 2)
    rebuilt = DiT(**model.config)
    load_dit_state_dict(rebuilt, model.state_dict())
    x, t, y = dit_inputs(model, groups=3)
    task = torch.tensor([1, 0, 1])
    randomise(model)
    load_dit_state_dict(rebuilt, model.state_dict())
    assert torch.equal(rebuilt.eval()(x, t, y, task=task), model(x, t, y, task=task))


# ---------------------------------------------------------------------------------------------- building blocks


def test_attention_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(dim=8, num_heads=2)
    x = torch.randn(2, 5, 8)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 4).unbind(2)  # each (B, N, nh, hd)
    weights = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(4), dim=-1)
    ref = attn.proj(torch.einsum("bhnm,bmhd->bnhd", weights, v).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x), ref, atol=1e-6, rtol=1e-5)


def test_unpatchify_inverts_row_major_patchify():
    model = micro()  # p = 2, out_channels = 8, 4x4 tokens
    img = torch.randn(2, 8, 8, 8)
    # token (i, j) holds its p x p x C patch in (p_row, p_col, channel) order
    tokens = img.reshape(2, 8, 4, 2, 4, 2).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 2 * 2 * 8)
    assert torch.equal(model.unpatchify(tokens), img)


def test_integer_and_float_timesteps_give_the_same_output():
    model = randomise(micro())
    x, t, y = dit_inputs(model)
    assert torch.equal(model(x, t, y), model(x, t.float(), y))


# ---------------------------------------------------------------------------------------------- adaLN-Zero


def test_fresh_dit_outputs_zeros_and_each_block_is_identity():
    model = micro()
    x, t, y = dit_inputs(model)
    assert torch.equal(model(x, t, y), torch.zeros(3, 8, 8, 8))
    tokens, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    assert torch.equal(model.blocks[0](tokens, c), tokens)


def test_one_adamw_step_on_a_real_loss_makes_output_nonzero():
    torch.manual_seed(0)
    model = micro()
    x, t, y = dit_inputs(model)
    eps = torch.randn(3, 4, 8, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = F.mse_loss(model(x, t, y)[:, :4], eps)
    loss.backward()
    opt.step()
    assert model(x, t, y).abs().max() > 1e-4
    assert F.mse_loss(model(x, t, y)[:, :4], eps) < loss


# ---------------------------------------------------------------------------------------------- labels and guidance


def test_label_dropout_only_in_training_mode():
    model = randomise(micro(class_dropout_prob=1.0))  # every label dropped when dropout applies
    x, t, y = dit_inputs(model)
    null = torch.full_like(y, model.num_classes)
    cond_eval, null_eval = model(x, t, y), model(x, t, null)
    assert not torch.allclose(cond_eval, null_eval)
    model.train()
    torch.testing.assert_close(model(x, t, y), null_eval)
    force = model.y_embedder(y, train=False, force_drop_ids=torch.tensor([1, 0, 1]))
    table = model.y_embedder.embedding_table.weight
    assert torch.equal(force, table[torch.stack([null[0], y[1], null[2]])])


def test_guided_model_fn_scale_1_is_conditional_and_scale_s_is_the_guidance_formula():
    model = randomise(micro())
    x, t, y = dit_inputs(model)
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, model.num_classes))
    C = x.shape[1]
    one = ddim.guided_model_fn_cfg(model, y, model.num_classes, 1.0)(x, t)
    torch.testing.assert_close(one, cond[:, :C], atol=1e-5, rtol=0)
    guided = ddim.guided_model_fn_cfg(model, y, model.num_classes, 4.0)(x, t)
    torch.testing.assert_close(guided, uncond[:, :C] + 4.0 * (cond[:, :C] - uncond[:, :C]), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- widening and routing


@pytest.mark.parametrize("groups", [2, 3])
def test_widened_model_on_copies_of_one_latent_equals_original(groups):
    model = randomise(micro())
    x, t, y = dit_inputs(model)
    before = model(x, t, y)
    widen_input(model, groups)
    assert model.x_embedder.proj.weight.shape == (32, 4 * groups, 2, 2)
    assert model.out_channels == 8 and model.config["in_groups"] == groups
    torch.testing.assert_close(model(x.repeat(1, groups, 1, 1), t, y), before, atol=1e-5, rtol=0)


def test_mixed_task_batch_uses_each_samples_own_patch_embedding():
    model = randomise(make_multitask(micro(), 3))  # every router entry gets different random weights
    x, t, y = dit_inputs(model, batch=5)
    task = torch.tensor([2, 0, 1, 0, 2])
    mixed = model(x, t, y, task=task)
    for k, embed in enumerate(model.x_embedder.embedders):
        # reference: a plain single-embedder DiT holding task k's conv
        single = DiT(**{**model.config, "num_tasks": 0}).eval()
        sd = {key: v for key, v in model.state_dict().items() if not key.startswith("x_embedder.")}
        sd.update({f"x_embedder.{key}": v for key, v in embed.state_dict().items()})
        sd["y_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"][: model.num_classes + 1]
        load_dit_state_dict(single, sd)
        torch.testing.assert_close(mixed[task == k], single(x, t, y)[task == k], atol=1e-6, rtol=0)


def test_absent_tasks_still_get_gradients_so_ddp_sees_every_parameter():
    model = make_multitask(micro(), 3)
    x, t, y = dit_inputs(model, batch=2)
    model(x, t, y, task=torch.tensor([1, 1])).square().sum().backward()
    assert all(p.grad is not None for p in model.x_embedder.parameters())


def test_task_labels_follow_the_null_row_and_start_as_class_group_means():
    model = micro()
    table = model.y_embedder.embedding_table.weight.clone()
    make_multitask(model, 2, class_groups=[[0, 3], [5, 6, 7]])
    new = model.y_embedder.embedding_table.weight
    assert new.shape == (10 + 1 + 2, 32)
    assert torch.equal(new[:11], table)  # classes and the null row keep their ids
    assert task_label(model, 0) == 11 and task_label(model, 1) == 12
    torch.testing.assert_close(new[11], table[[0, 3]].mean(0))
    torch.testing.assert_close(new[12], table[[5, 6, 7]].mean(0))
    model = micro()
    table = model.y_embedder.embedding_table.weight.clone()
    make_multitask(model, 2)  # default: contiguous groups, classes 0-4 and 5-9
    torch.testing.assert_close(model.y_embedder.embedding_table.weight[11:], torch.stack([table[:5].mean(0), table[5:10].mean(0)]))


def test_widening_and_routing_compose_in_either_order():
    base = randomise(micro())
    a = make_multitask(widen_input(copy.deepcopy(base), 2), 2)
    b = widen_input(make_multitask(copy.deepcopy(base), 2), 2)
    assert a.config == b.config
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    x, t, y = dit_inputs(base, batch=2, groups=2)
    task = torch.tensor([0, 1])
    assert torch.equal(a.eval()(x, t, y, task=task), b.eval()(x, t, y, task=task))


# ---------------------------------------------------------------------------------------------- text


def random_tokens(batch=3, length=5, vocab=20, seed=2):
    """Token ids with padding (0) mixed in, every row keeping at least one real token."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, length), generator=g)
    tokens[:, 0] = torch.randint(1, vocab, (batch,), generator=g)
    return tokens


def test_zero_init_text_path_leaves_output_unchanged():
    model = randomise(micro())  # nonzero weights everywhere, so the only zero is the new projection
    x, t, y = dit_inputs(model)
    before = model(x, t, y)
    add_text(model, vocab_size=20)
    assert model.config["vocab_size"] == 20 and not torch.equal(model.text_embedder.embedding.weight, torch.zeros(20, 32))
    torch.testing.assert_close(model(x, t, y, tokens=random_tokens()), before, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(x, t, y), before, atol=1e-6, rtol=0)  # tokens=None: the null text


def test_null_text_contributes_exactly_zero_after_the_projection_is_trained():
    model = randomise(micro(vocab_size=20))  # proj weight AND bias nonzero, as after training
    assert model.text_embedder.proj.bias.abs().min() > 0
    x, t, y = dit_inputs(model)
    null = torch.zeros(3, 7, dtype=torch.long)
    assert torch.equal(model.text_embedder(null), torch.zeros(3, 32))
    # the reference: the same weights in a text-less DiT
    plain = DiT(**{**model.config, "vocab_size": 0}).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("text_embedder.")})
    assert torch.equal(model(x, t, y, tokens=null), plain(x, t, y))
    assert torch.equal(model(x, t, y), plain(x, t, y))
    assert not torch.allclose(model(x, t, y, tokens=random_tokens()), plain(x, t, y))  # real text does act


def test_config_rebuilds_a_text_model_and_loads_it_strictly():
    model = randomise(add_text(widen_input(micro(), 2), 20))
    rebuilt = DiT(**model.config).eval()
    load_dit_state_dict(rebuilt, model.state_dict())
    assert {k for k in rebuilt.state_dict() if k.startswith("text_")} == {
        "text_embedder.embedding.weight", "text_embedder.proj.weight", "text_embedder.proj.bias"}
    x, t, y = dit_inputs(model, groups=2)
    tokens = random_tokens()
    assert torch.equal(rebuilt(x, t, y, tokens=tokens), model(x, t, y, tokens=tokens))
    with pytest.raises(CheckpointMismatchError, match="3 unexpected keys: text_embedder"):
        load_dit_state_dict(widen_input(micro(), 2), model.state_dict())


def test_bad_text_input_is_rejected_by_name():
    x, t, y = dit_inputs(micro())
    with pytest.raises(ValueError, match=r"no text path \(vocab_size=0\); call add_text"):
        micro()(x, t, y, tokens=random_tokens())
    model = micro(vocab_size=20)
    with pytest.raises(ValueError, match=r"token id 20 is outside the vocabulary: valid ids are 0..19"):
        model(x, t, y, tokens=torch.tensor([[1, 20], [0, 0], [3, 4]]))
    with pytest.raises(ValueError, match="token id -1 is outside"):
        model(x, t, y, tokens=torch.tensor([[1, -1], [0, 0], [3, 4]]))
    with pytest.raises(ValueError, match=r"tokens must be \(3, L\) integer ids"):
        model(x, t, y, tokens=torch.ones(3, 4))
    with pytest.raises(ValueError, match="already has a text path"):
        add_text(model, 30)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2"):
        add_text(micro(), 1)


def test_text_path_gets_gradients_even_without_tokens_so_ddp_sees_every_parameter():
    model = randomise(micro(vocab_size=20)).train()
    x, t, y = dit_inputs(model)
    model(x, t, y).square().sum().backward()
    assert all(p.grad is not None for p in model.text_embedder.parameters())


# ---------------------------------------------------------------------------------------------- bad input


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'DiT-XXL/2'.*DiT-S/2.*a1.*tiny"):
        build_dit("DiT-XXL/2")


def test_image_size_not_divisible_by_patch_is_rejected():
    with pytest.raises(ValueError, match="input_size=10 is not divisible by patch_size=4"):
        build_dit("tiny", input_size=10)
    model = micro()
    with pytest.raises(ValueError, match=r"spatial size \(16, 16\).*input_size=8"):
        model(torch.zeros(1, 4, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_task_id_without_router_entry_is_rejected():
    model = make_multitask(micro(), 2)
    x, t, y = dit_inputs(model, batch=2)
    with pytest.raises(ValueError, match="task id 2 has no router entry; valid ids are 0..1"):
        model(x, t, y, task=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="pass task"):
        model(x, t, y)
    with pytest.raises(ValueError, match="make_multitask"):
        micro()(x, t, y, task=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="task 2 has no label"):
        task_label(model, 2)
