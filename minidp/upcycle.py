"""Sparse upcycling: turn a trained dense DiT into an MoE DiT that starts from the dense function.

Sparse upcycling (Komatsuzaki et al. 2022) copies each dense MLP into all E experts of a new MoE layer and
adds a freshly initialised router; training then continues from the dense checkpoint instead of from
scratch. The scaling paper (Ravishankar et al. 2024, §4.4, Fig. 6) upcycles a2-a4 DiTs AFTER depth
fine-tuning and fine-tunes 15K more iterations; its generalist DiT-XL is upcycled to XL-8E2A (§5).

Why renormalisation matters. With E identical experts f and top-k weights w_1..w_k, the layer computes
(w_1 + ... + w_k) f(x). Renormalised weights sum to 1, so the upcycled model equals the dense model at
initialisation whatever the (random) router says; DiT-MoE's unnormalised softmax weights sum to less than 1
(k/E for a uniform router; about 0.37 for top-2 of 8 with an N(0, 0.02) router at D = 384 and unit-variance
tokens), which shrinks every MLP branch. Hence renormalize=True by default.

Notable choices:
- The upcycled experts are DiT's own GELU MLP (expert="gelu") and there is no shared expert: the scaling
  paper's upcycled models have none, and a shared expert would add an un-trained branch to the function.
- The router is re-drawn N(0, router_std = 0.02) as in DiT-MoE's upcycle script (a small router keeps the
  initial scores near uniform, so early routing is not locked in by an arbitrary large init).
- Everything that is not a dense MLP is copied by key: widened patch embeddings, a PatchEmbedRouter, the
  task rows of the label table (the dense model's `config` carries in_groups / num_tasks, so the MoE model
  is built with the same shapes). The weights are copied, so the two models never share storage.
- Upcycling takes a module, not a state dict: build the dense model, load its checkpoint with
  checkpoint.load_dit_state_dict (which checks every key and shape), then upcycle. Anything else is refused by name.
"""

import torch

from minidp.dit import DiT, Mlp
from minidp.moe import DiTMoE, MoEFeedForward, moe_block_ids


def check_dense_dit(model):
    """Raise a ValueError naming what `model` is when it is not a dense DiT with DiT MLPs in every block."""
    if isinstance(model, dict):
        raise ValueError("upcycle takes a dense DiT module, got a dict (a state dict or a checkpoint?): build the "
                         "model with dit.build_dit, load it with checkpoint.load_dit_state_dict, then upcycle it")
    if not isinstance(model, DiT):
        raise ValueError(f"upcycle takes a dense DiT, got {type(model).__name__}")
    if isinstance(model, DiTMoE) or any(isinstance(m, MoEFeedForward) for m in model.modules()):
        raise ValueError(f"upcycle takes a dense DiT, got an MoE model ({type(model).__name__} with "
                         f"num_experts={model.config.get('num_experts')}): it is already upcycled")
    for i, block in enumerate(model.blocks):
        if type(block.mlp) is not Mlp:
            raise ValueError(f"upcycle needs DiT's Mlp in every block; blocks[{i}].mlp is {type(block.mlp).__name__}")


@torch.no_grad()
def upcycle(dense_model, num_experts, top_k, every=1, renormalize=True, router_std=0.02, generator=None,
            balance_alpha=0.01):
    """A new DiTMoE whose MoE blocks hold `num_experts` copies of the dense block's MLP and a new router.

    every: 1 upcycles every block, 2 every other block (blocks 1, 3, ...; see moe.moe_block_ids).
    generator: a torch.Generator for the router draw (CPU), for reproducible upcycling.
    balance_alpha: the balance-loss weight of the new MoE layers (DiT-MoE: 0.01; 0 turns it off).
    The result has the dense model's device, dtype and train/eval mode; the dense model is not modified.
    """
    check_dense_dit(dense_model)
    weight = next(dense_model.parameters())
    with torch.device(weight.device):
        moe = DiTMoE(num_experts=num_experts, top_k=top_k, moe_every=every, expert="gelu", num_shared=0,
                     renormalize=renormalize, balance_alpha=balance_alpha, **dense_model.config)
    moe.to(weight.dtype)

    dense_sd = dense_model.state_dict()
    moe_blocks = set(moe_block_ids(moe.depth, every))
    new_sd = {}
    for key, target in moe.state_dict().items():
        # MoE block keys look like blocks.{i}.mlp.experts.{j}.fc1.weight or blocks.{i}.mlp.router.weight.
        parts = key.split(".")
        in_moe_mlp = parts[0] == "blocks" and int(parts[1]) in moe_blocks and parts[2] == "mlp"
        if in_moe_mlp and parts[3] == "router":
            noise = torch.randn(target.shape, generator=generator) * router_std  # (E, D)
            new_sd[key] = noise.to(target)
            continue
        # Every expert j of block i reads the dense blocks.{i}.mlp.{fc1,fc2}.{weight,bias}.
        source = ".".join(parts[:3] + parts[5:]) if in_moe_mlp else key
        new_sd[key] = dense_sd[source]
    # load_state_dict copies into the MoE model's own Parameters: the two models never share storage.
    moe.load_state_dict(new_sd, strict=True)
    return moe.train(dense_model.training)
