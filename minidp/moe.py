"""Mixture-of-experts feed-forward layer (router, top-k dispatch, shared expert, balance loss) and the MoE DiT.

A sparse MoE layer (Shazeer et al. 2017) replaces a transformer block's MLP by E expert MLPs and a router
that sends every token to its top-k experts; the layer's output is the router-weighted sum of those k
experts' outputs, plus an always-on shared expert. This is the layer of DiT-MoE (Fei et al. 2024,
"Scaling Diffusion Transformers to 16 Billion Parameters"), which the scaling paper (Ravishankar et al.
2024, §3.2, Table 2) pre-trains, and the target of sparse upcycling (Komatsuzaki et al. 2022; upcycle.py).

For a token x (one row of the (M, D) token matrix), with router weight W of shape (E, D):

    s = softmax(W x)                          # router scores over all E experts
    (w, i) = topk(s, K)                       # the K chosen experts and their scores
    w = w / sum(w)        (only if renormalize; Mixtral / Qwen-MoE do it, DiT-MoE does not)
    y = sum_j w_j * expert_{i_j}(x) + shared(x)

Balance loss (DiT-MoE's batch-wise auxiliary loss, alpha = 0.01):

    f_e = E * (fraction of the routed (token, slot) pairs sent to expert e)     (no gradient: a count)
    P_e = mean over tokens of s_e                                               (gradient flows to W)
    aux = alpha * sum_e f_e * P_e

Under perfectly uniform routing f_e = 1 and P_e = 1/E, so aux = alpha: the value to compare logs against.

Notable choices:
- Dispatch is "sort by expert": flatten the M*K (token, slot) pairs, argsort them by expert id, gather the
  token rows into one expert-contiguous matrix, run each expert ONCE on its slice (a Python loop over E
  experts, never over tokens), weight the outputs and scatter-add them back with index_add_. No capacity
  limit and no dropped tokens, so the layer is an exact function of its input (upcycling relies on that).
  This is what DiT-MoE does at inference (`moe_infer`); its training path masks each expert separately.
- The auxiliary outputs are stored explicitly on the module after every forward (`self.last_aux`), and
  `moe_aux(model)` walks the modules to collect them. No autograd trick (DiT-MoE hides the aux loss in a
  custom autograd.Function whose backward injects a gradient of 1): the training loop adds the returned
  balance loss to its loss where a reader can see it.
- The balance loss is computed in eval mode too (it costs one (E,) reduction): the router loads it reports
  are what one wants to monitor on validation batches.
- Expert types: "swiglu" is DiT-MoE's expert (three bias-free Linears, hidden width mlp_ratio * D = 4D, NOT
  the LLaMA 2/3 reduction); "gelu" is DiT's MLP (fc1 -> GELU(tanh) -> fc2, with biases), the expert type
  sparse upcycling produces because it copies the dense DiT's MLP.
- Shared expert: DiT-MoE's code builds it as one expert of hidden width `n_shared_experts * D` = 2D and
  calls it "2 shared experts". We follow the released code (num_shared is that width multiplier over D), not
  "2 x 4D": the code's width is the one that reproduces the paper's Table 2 counts (S/2-8E2A 199M total /
  71M active; 2 x 4D would give ~230M). The shared expert has the same type as the routed experts.
- DiTMoE is dit.py's DiT with some blocks' `mlp` swapped for this layer, so embeddings, attention, input
  widening and the task router are shared code. Active vs total compute and size (`moe_macs`,
  `moe_params`) are in compute.py, next to the dense counts they extend.

Letter legend for shape comments: B batch, N tokens per sample, D width, M = B*N tokens, E experts,
K top-k slots per token, P = M*K routed (token, slot) pairs, H expert hidden width.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from minidp.dit import DIT_PRESETS, DiT, Mlp, preset_builder


# ----------------------------------------------------------------------------------------------------------
# Experts
# ----------------------------------------------------------------------------------------------------------

class SwiGLU(nn.Module):
    """DiT-MoE's expert (Shazeer 2020, "GLU variants"): down(silu(gate(x)) * up(x)), no biases.

    Key names (gate_proj / up_proj / down_proj) are DiT-MoE's, so its checkpoints map onto ours by renaming
    only the module path. 3 * D * H MACs per token, versus 2 * D * H for the GELU MLP of the same width.
    """

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# "gelu" is DiT's own MLP class (fc1 -> GELU(tanh) -> fc2), so an upcycled expert is literally a dense MLP.
EXPERT_TYPES = {"gelu": Mlp, "swiglu": SwiGLU}


# ----------------------------------------------------------------------------------------------------------
# The MoE layer
# ----------------------------------------------------------------------------------------------------------

class MoEFeedForward(nn.Module):
    """Top-k routed mixture of E experts (+ an optional shared expert) acting on (B, N, D) tokens."""

    def __init__(self, dim, num_experts, top_k, hidden_dim=None, expert="gelu", num_shared=0,
                 renormalize=False, balance_alpha=0.01):
        super().__init__()
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"num_experts must be an integer >= 1, got {num_experts!r}")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if top_k > num_experts:
            raise ValueError(f"top_k={top_k} must be <= num_experts={num_experts}: a token cannot pick "
                             f"more distinct experts than exist")
        if expert not in EXPERT_TYPES:
            raise ValueError(f"expert={expert!r} is not a known expert type; choose one of "
                             f"{sorted(EXPERT_TYPES)}")
        if not isinstance(num_shared, int) or num_shared < 0:
            raise ValueError(f"num_shared must be an integer >= 0 (shared-expert width in units of dim), "
                             f"got {num_shared!r}")
        # DiT (and DiT-MoE's routed experts) use mlp_ratio = 4.
        hidden_dim = 4 * dim if hidden_dim is None else hidden_dim
        self.dim, self.hidden_dim, self.expert = dim, hidden_dim, expert
        self.num_experts, self.top_k, self.num_shared = num_experts, top_k, num_shared
        self.renormalize, self.balance_alpha = renormalize, balance_alpha

        # Router weight W is (E, D). nn.Linear's default init (kaiming-uniform, a = sqrt(5)) is exactly what
        # DiT-MoE's MoEGate.reset_parameters does; upcycle.py re-draws it N(0, 0.02) instead.
        self.router = nn.Linear(dim, num_experts, bias=False)
        make = EXPERT_TYPES[expert]
        self.experts = nn.ModuleList([make(dim, hidden_dim) for _ in range(num_experts)])
        self.shared = make(dim, num_shared * dim) if num_shared > 0 else None
        # Filled by every forward: {"balance_loss": () tensor with grad, "load": (E,) detached}.
        self.last_aux = None

    def __getstate__(self):
        # The stored aux outputs are per-step scratch, not state: copies (the EMA model, pickling) start
        # without them, and deepcopy could not copy them anyway (they are non-leaf tensors of a graph).
        state = self.__dict__.copy()
        state["last_aux"] = None
        return state

    def route(self, x):
        """Router on (M, D) tokens -> scores (M, E), top-k weights (M, K) and expert ids (M, K)."""
        scores = self.router(x).softmax(dim=-1)                     # (M, E)
        weights, idx = scores.topk(self.top_k, dim=-1)              # (M, K), (M, K)
        if self.renormalize:
            # Mixtral-style: the K weights sum to 1, so K copies of one MLP reproduce that MLP exactly.
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return scores, weights, idx

    def forward(self, x):
        B, N, D = x.shape
        E, K = self.num_experts, self.top_k
        tokens = x.reshape(B * N, D)                                # (M, D)
        scores, weights, idx = self.route(tokens)

        # Sort the P = M*K (token, slot) pairs by expert so each expert sees one contiguous slice.
        pair_expert = idx.reshape(-1)                               # (P,) expert id of pair p = m*K + j
        order = pair_expert.argsort(stable=True)                    # (P,) pairs grouped by expert
        pair_token = order // K                                     # (P,) token row of each sorted pair
        counts = torch.bincount(pair_expert, minlength=E)           # (E,) pairs per expert
        routed = tokens[pair_token]                                 # (P, D) expert-contiguous inputs

        # One host sync for the split sizes; then one call per expert, never per token. An expert with no
        # pairs still runs on an empty slice, so every parameter is in the graph (DDP needs no
        # find_unused_parameters).
        out = torch.cat([expert(chunk) for expert, chunk in zip(self.experts, routed.split(counts.tolist()))])  # (P, D)
        out = out * weights.reshape(-1)[order].unsqueeze(-1)        # (P, D) times each pair's weight
        # new_zeros from `out`, not from `tokens`: under bf16 autocast the two dtypes differ.
        y = out.new_zeros(B * N, D).index_add_(0, pair_token, out)  # (M, D) sum over a token's K slots

        if self.shared is not None:
            y = y + self.shared(tokens)                             # every token, unweighted (DiT-MoE)

        # Batch-wise balance loss; f carries no gradient (it is a count), P does (through the softmax).
        load = counts.to(scores.dtype) / (B * N * K)                # (E,) fraction of pairs per expert
        f = E * load
        P = scores.mean(dim=0)                                      # (E,)
        self.last_aux = {"balance_loss": self.balance_alpha * (f * P).sum(), "load": load.detach()}
        return y.reshape(B, N, D)                                   # (B, N, D)


# ----------------------------------------------------------------------------------------------------------
# The MoE DiT
# ----------------------------------------------------------------------------------------------------------

def moe_block_ids(depth, moe_every):
    """Indices of the blocks that get an MoE layer: every block (moe_every=1), or blocks 1, 3, 5, ... (2).

    Every-other-layer MoE (as in GShard) halves the expert parameters; we put the MoE in the second block
    of each pair so the first block always stays dense.
    """
    return [i for i in range(depth) if (i + 1) % moe_every == 0]


def init_expert_weights(layer):
    """DiT-MoE's init of a fresh MoE layer: xavier-uniform expert (and shared) Linears, zero biases.

    The router keeps nn.Linear's default (kaiming-uniform, a = sqrt(5)), which is DiT-MoE's gate init.
    DiT.initialize_weights cannot be reused: it zeroes every Linear's bias, and SwiGLU Linears have none.
    """
    for module in layer.modules():
        if isinstance(module, nn.Linear) and module is not layer.router:
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class DiTMoE(DiT):
    """A DiT whose blocks' `mlp` are MoEFeedForward layers (DiT-MoE; or, from upcycle.py, GELU experts).

    Everything else (embedders, attention, adaLN, widened inputs, task router) is DiT's, with DiT's key
    names; an MoE block's MLP keys become `blocks.i.mlp.router.weight`, `blocks.i.mlp.experts.j.*` and
    `blocks.i.mlp.shared.*`. Defaults are DiT-MoE's: SwiGLU experts, a shared expert of width 2D, top-k
    weights not renormalised. `DiTMoE(**model.config)` rebuilds the architecture.
    """

    def __init__(self, num_experts=8, top_k=2, moe_every=1, expert="swiglu", num_shared=2, renormalize=False,
                 balance_alpha=0.01, **dit_kwargs):
        super().__init__(**dit_kwargs)
        if not isinstance(moe_every, int) or not 1 <= moe_every <= self.depth:
            raise ValueError(f"moe_every must be an integer in 1..depth={self.depth} (1: every block, 2: every "
                             f"other block), got {moe_every!r}")
        hidden_dim = int(self.hidden_size * self.config["mlp_ratio"])  # the dense MLP's width, DiT-MoE's too
        for i in moe_block_ids(self.depth, moe_every):
            layer = MoEFeedForward(self.hidden_size, num_experts, top_k, hidden_dim, expert, num_shared,
                                   renormalize, balance_alpha)
            init_expert_weights(layer)
            self.blocks[i].mlp = layer  # DiTBlock calls self.mlp on (B, N, D) tokens only
        self.config.update(num_experts=num_experts, top_k=top_k, moe_every=moe_every, expert=expert,
                           num_shared=num_shared, renormalize=renormalize, balance_alpha=balance_alpha)


# ----------------------------------------------------------------------------------------------------------
# Auxiliary outputs
# ----------------------------------------------------------------------------------------------------------

def moe_aux(model):
    """Collect the auxiliary outputs of every MoEFeedForward in `model` from its last forward.

    Returns (balance_loss_sum, loads): the sum over MoE layers of their balance losses (a () tensor that
    carries gradient to the routers; 0 for a model without MoE layers) and a (L, E) tensor of each layer's
    routed-pair fractions, in module order. The training loop does
        loss = diffusion_loss + moe_aux(model)[0]
    right after the forward that produced `diffusion_loss` (a later forward overwrites the stored values).
    """
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    if not layers:
        return torch.zeros(()), torch.zeros(0, 0)
    if any(m.last_aux is None for m in layers):
        raise RuntimeError("moe_aux(model) needs a forward pass first: an MoE layer has no stored aux outputs")
    balance = sum(m.last_aux["balance_loss"] for m in layers)
    loads = torch.stack([m.last_aux["load"] for m in layers])       # (L, E)
    return balance, loads


# ----------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------

# "8E2A" = 8 experts, 2 active per token. DiT-MoE's expert type (SwiGLU) and shared expert (width 2D)
# come from DiTMoE's defaults. Paper's Table 2 / REFERENCE.md: S/2-8E2A 199M total / 71M active,
# S/2-16E2A 369M, B/2-8E2A 796M, L/2-8E2A 2.8B / 1.0B (checked in tests/test_moe.py).
MOE_PRESETS = {
    "DiT-S/2-8E2A": dict(DIT_PRESETS["DiT-S/2"], num_experts=8, top_k=2),
    "DiT-S/2-16E2A": dict(DIT_PRESETS["DiT-S/2"], num_experts=16, top_k=2),
    "DiT-B/2-8E2A": dict(DIT_PRESETS["DiT-B/2"], num_experts=8, top_k=2),
    "DiT-L/2-8E2A": dict(DIT_PRESETS["DiT-L/2"], num_experts=8, top_k=2),
    # 4.2B total / 1.5B active with DiT-MoE's experts. The scaling paper's generalist "DiT-XL-8E2A" is an
    # UPCYCLED XL (GELU experts, no shared expert): upcycle.upcycle(xl_model, 8, 2), not this preset.
    "DiT-XL/2-8E2A": dict(DIT_PRESETS["DiT-XL/2"], num_experts=8, top_k=2),
    # CPU sizes with dit.py's tiny / micro width and depth ("micro" is for unit tests only). tiny-8E2A has
    # about 5.5x the dense tiny's parameters in total and 2x active (SwiGLU is 1.5x a GELU MLP, + shared).
    "tiny-8E2A": dict(DIT_PRESETS["tiny"], num_experts=8, top_k=2),
    "tiny-16E2A": dict(DIT_PRESETS["tiny"], num_experts=16, top_k=2),
    "micro-4E2A": dict(DIT_PRESETS["micro"], num_experts=4, top_k=2),
    # tiny-8E2A cut to the dense tiny's active MACs per token: 8 SwiGLU experts of width 4 D / 3 (128), top-2, no
    # shared expert: 2 x 3 D (4 D / 3) + D E = 8 D^2 + D E against the GELU MLP's 8 D^2 (48.7M against 48.5M per
    # sample), with 2.2x its parameters (configs/sweeps/moe_equal_active.yaml).
    "tiny-8E2A-slim": dict(DIT_PRESETS["tiny"], num_experts=8, top_k=2, mlp_ratio=4 / 3, num_shared=0),
}


DiTMoE_models = {name: preset_builder(arch, DiTMoE) for name, arch in MOE_PRESETS.items()}


def build_moe(name, **overrides):
    """Build MoE preset `name` (see DiTMoE_models) with constructor overrides.

    E.g. build_moe("tiny-8E2A", input_size=32, in_channels=3), or renormalize=True, moe_every=2.
    """
    if name not in DiTMoE_models:
        raise ValueError(f"unknown MoE preset {name!r}; valid presets: {', '.join(DiTMoE_models)}")
    return DiTMoE_models[name](**overrides)
