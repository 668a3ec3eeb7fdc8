"""Compute and size of dense and MoE DiTs: analytic multiply-accumulates (MACs) and parameter counts.

The scaling paper (Ravishankar et al. 2024, papers/001, Sec. 3 and Figs. 2-6) plots every run against
training compute in MACs and reports model sizes (Table 1 dense, Table 2 MoE: total and active). DiT
(Peebles & Xie 2023) reports "Gflops" that are MACs too: DiT-XL/2 at 256 px is 118.6.

Counting rules, per forward of one sample with N tokens, width D, MLP width F = mlp_ratio * D:

    patch embed       N * (G*C) * p^2 * D              (a router model: still one embedder per sample)
    timestep MLP      256 D + D^2
    text projection   D^2 if the model has a text path (the token lookup and the mean are not MACs)
    per block         6 D^2 (adaLN, once per sample) + 4 N D^2 (qkv, proj) + 2 N^2 D (scores, weighted sum)
                      + 2 N D F (MLP)
    final layer       2 D^2 (adaLN) + N D p^2 C_out

An MoE block replaces the MLP's 2 N D F by N (D E + K e + s): router, K routed experts of e MACs each
(2 D H for GELU, 3 D H for SwiGLU) and the shared expert. "active" counts the K experts a token visits,
"total" all E (what a top-E-of-E model computes).

Notable choices:
- Analytic, not traced: tracing tools (thop) do not follow the MoE's data-dependent dispatch. Both counts
  equal torch's FlopCounterMode / 2 exactly on the test models (tests/test_compute.py; attention through
  the math backend, whose matmuls FlopCounterMode sees).
- Elementwise ops, norms, softmax, the label lookup and biases are not MACs.
- dit_macs / moe_macs take a model or a (partial) config dict: missing keys take the constructor's defaults
  (DIT_DEFAULTS, MOE_DEFAULTS read from the signatures), so a preset's architecture dict is enough.
- count_params counts trainable parameters by default, which leaves out DiT's frozen pos_embed; DiT's own
  printed sizes include it (trainable_only=False).
"""

import inspect

import torch.nn as nn

from minidp.dit import DiT
from minidp.moe import DiTMoE, MoEFeedForward, moe_block_ids

# Constructor defaults, so the MAC counts can take a partial config (e.g. a preset's architecture dict).
DIT_DEFAULTS = {name: p.default for name, p in inspect.signature(DiT.__init__).parameters.items() if name != "self"}
# The MoE part of an MoE DiT's config (the rest is DiT's).
MOE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(DiTMoE.__init__).parameters.items()
    if name not in ("self", "dit_kwargs")
}  # fmt: skip


def _config(model_or_config):
    return model_or_config.config if isinstance(model_or_config, nn.Module) else model_or_config


def dit_macs(model_or_config, batch=1):
    """Analytic MACs of one forward pass of a dense DiT on `batch` samples (counting rules above).

    For DiT-XL/2 at 256 px this gives DiT's reported 118.6 "Gflops" (which are MACs).
    """
    cfg = _config(model_or_config)
    unknown = sorted(set(cfg) - set(DIT_DEFAULTS))
    if unknown:
        raise ValueError(f"dit_macs counts dense DiTs; unknown config keys {unknown} (valid: {sorted(DIT_DEFAULTS)})")
    cfg = {**DIT_DEFAULTS, **cfg}
    D, p = cfg["hidden_size"], cfg["patch_size"]
    if cfg["input_size"] % p:
        raise ValueError(f"input_size={cfg['input_size']} is not divisible by patch_size={p}")
    N = (cfg["input_size"] // p) ** 2
    F_ = int(D * cfg["mlp_ratio"])
    c_in = cfg["in_groups"] * cfg["in_channels"]
    c_out = cfg["in_channels"] * (2 if cfg["learn_sigma"] else 1)
    patch = N * c_in * p * p * D
    t_embed = 256 * D + D * D
    text = D * D if cfg["vocab_size"] else 0
    block = 6 * D * D + N * 4 * D * D + 2 * N * N * D + 2 * N * D * F_
    final = 2 * D * D + N * D * p * p * c_out
    return batch * (patch + t_embed + text + cfg["depth"] * block + final)


def expert_macs(expert, dim, hidden_dim):
    """MACs of one expert on one token (matmuls only; biases and activations are O(D))."""
    return {"gelu": 2, "swiglu": 3}[expert] * dim * hidden_dim


def moe_macs(model_or_config, batch=1):
    """Analytic MACs of one forward of an MoE DiT on `batch` samples: {"active": ..., "total": ...}.

    Starts from dit_macs (the dense DiT, same rules) and swaps each MoE block's dense MLP for the MoE cost.
    """
    cfg = _config(model_or_config)
    if "num_experts" not in cfg:
        raise ValueError("moe_macs needs an MoE DiT or its config (with num_experts); "
                         "use compute.dit_macs for a dense DiT")  # fmt: skip
    moe = {**MOE_DEFAULTS, **{k: v for k, v in cfg.items() if k in MOE_DEFAULTS}}
    dense_cfg = {k: v for k, v in cfg.items() if k not in MOE_DEFAULTS}
    dense = dit_macs(dense_cfg, batch=batch)
    arch = {**DIT_DEFAULTS, **dense_cfg}
    D = arch["hidden_size"]
    H = int(D * arch["mlp_ratio"])
    N = (arch["input_size"] // arch["patch_size"]) ** 2
    E, K = moe["num_experts"], moe["top_k"]
    one = expert_macs(moe["expert"], D, H)
    shared = expert_macs(moe["expert"], D, moe["num_shared"] * D)
    # Per token of each MoE block: router (D E) + experts + shared, minus the dense MLP it replaces.
    per_token = {"active": D * E + K * one + shared - 2 * D * H, "total": D * E + E * one + shared - 2 * D * H}
    blocks = len(moe_block_ids(arch["depth"], moe["moe_every"]))
    return {k: dense + batch * blocks * N * v for k, v in per_token.items()}


def model_macs(model):
    """Forward MACs per sample of a dense or MoE DiT, counting only the experts a token visits."""
    return moe_macs(model)["active"] if "num_experts" in model.config else dit_macs(model)


def count_params(model, trainable_only=True):
    """Number of parameters (trainable only by default, which excludes DiT's frozen pos_embed)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def moe_params(model):
    """{"active": parameters one token uses, "total": all} (trainable ones, as count_params).

    Active = total minus the (E - K) routed experts a token does not visit in each MoE layer; the router
    and the shared expert count as active (every token uses them).
    """
    total = count_params(model)
    idle = sum((m.num_experts - m.top_k) * count_params(m.experts[0])
               for m in model.modules() if isinstance(m, MoEFeedForward))  # fmt: skip
    return {"active": total - idle, "total": total}
