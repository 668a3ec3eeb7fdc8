"""DiT: the dense diffusion transformer with adaLN-Zero conditioning.

Implements "Scalable Diffusion Models with Transformers" (Peebles & Xie, 2023) as used by "Scaling
Properties of Diffusion Models for Perceptual Tasks" (Ravishankar et al., 2024; papers/001, Sec. 3.1,
Table 1) and its perception fine-tuning (Marigold, Ke et al. 2024; papers/001 Sec. 4).

    x (B, C, H, W) --patchify--> tokens (B, N, D) + pos_embed
    c = t_embedder(t) + y_embedder(y) [+ text_embedder(tokens)]          (B, D)
    per block:  x = x + gate_msa * Attn(LN(x) * (1 + scale_msa) + shift_msa)
                x = x + gate_mlp * MLP (LN(x) * (1 + scale_mlp) + shift_mlp)
    final layer: Linear(LN(x) * (1 + scale) + shift) --unpatchify--> (B, out_channels, H, W)

Shape legend: B batch, C channels, H/W image height/width (latent pixels), p patch size,
h/w token grid height/width (H/p, W/p), N = h*w tokens, D width (hidden size), nh heads, hd head width D/nh,
G input groups, K tasks, L text tokens per sample.

Notable choices:
- Module tree and state-dict keys are exactly those of the released DiT checkpoints (REFERENCE.md Sec. 2),
  so `DiT-XL-2-256x256.pt` loads strict=True into `build_dit("DiT-XL/2")`. Attention and MLP (and
  embed.py's patch embedding) are written here instead of imported from timm; they keep timm's names.
- Attention goes through torch's fused `scaled_dot_product_attention`.
- Input widening (Marigold): the patch-embedding conv is repeated for G input groups and divided by G,
  so the widened model computes the original function when every group carries the same latent.
- Multi-task (the scaling paper's generalist): a `PatchEmbedRouter` holds one patch embedding per task,
  and task k gets the label id `num_classes + 1 + k` (a row appended AFTER the null row). The official
  release uses ids 1000..1003 because its table has no null row at 1000; here the null row stays at
  `num_classes` so guidance and label dropout keep working, and the task rows go after it.
- Text conditioning (referring segmentation, ADDP's text guidance): `add_text` adds a mean-pooled token
  embedding to c through a zero-initialised Linear, so the trained model's function is unchanged.
- `checkpoint_activations` (train.checkpoint_activations) recomputes each block in the backward pass
  (torch.utils.checkpoint): activations of one block at a time, for a larger micro-batch on one GPU.
- The embedders (patches, timesteps, labels, text) live in embed.py; compute and size (MACs, parameter
  counts) in compute.py, with the MoE counts.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from minidp.embed import LabelEmbedder, PatchEmbed, PatchEmbedRouter, TextEmbedder, TimestepEmbedder, sincos_2d


# ----------------------------------------------------------------------------------------------------------
# Transformer blocks
# ----------------------------------------------------------------------------------------------------------


def modulate(x, shift, scale):
    """adaLN modulation of tokens (B, N, D) by per-sample shift/scale (B, D): x * (1 + scale) + shift."""
    # The "1 +" makes a zero scale the identity, which is what adaLN-Zero's zero init relies on.
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's parameter names)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, nh, N, hd)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, hd), softmax(q k^T / sqrt(hd)) v
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, N, D), heads concatenated
        return self.proj(x)


class Mlp(nn.Module):
    """Feed-forward D -> mlp_ratio*D -> D with tanh-approximated GELU (as DiT)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))  # (B, N, D)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: c regresses shift/scale/gate for attention and MLP.

    `self.mlp` is called on (B, N, D) tokens only, so an MoE layer can replace it (moe.py).
    """

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        # Index 1 matches DiT's `adaLN_modulation.1` key; this Linear is zero-initialised (the "Zero").
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c):
        # 6 x (B, D): shift/scale/gate for the attention branch, then for the MLP branch
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a Linear to p*p*out_channels values per token."""

    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x (B, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, p*p*C_out)


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Diffusion transformer: (x_t (B, G*C, H, W), t (B,), y (B,)) -> (B, out_channels, H, W).

    in_channels is the channel count of ONE input group (the target latent); a widened model (in_groups =
    G, see widen_input) takes G*in_channels channels, conditions first and the noisy target last.
    out_channels = 2*in_channels with learn_sigma (the second half is DiT's learned variance; DDIM ignores it).
    num_tasks > 0 builds a PatchEmbedRouter and task label rows (see make_multitask); vocab_size > 0 a text
    path over token ids 0..vocab_size-1, 0 = padding (see TextEmbedder, add_text).
    """

    def __init__(
        self,
        input_size=32,
        patch_size=2,
        in_channels=4,
        hidden_size=1152,
        depth=28,
        num_heads=16,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
        learn_sigma=True,
        in_groups=1,
        num_tasks=0,
        vocab_size=0,
    ):
        super().__init__()
        # Every constructor argument, so DiT(**model.config) rebuilds the architecture from a checkpoint.
        self.config = dict(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels, hidden_size=hidden_size,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, class_dropout_prob=class_dropout_prob,
            num_classes=num_classes, learn_sigma=learn_sigma, in_groups=in_groups, num_tasks=num_tasks,
            vocab_size=vocab_size,
        )  # fmt: skip
        if in_groups < 1:
            raise ValueError(f"in_groups must be >= 1, got {in_groups}")
        if num_tasks < 0:
            raise ValueError(f"num_tasks must be >= 0, got {num_tasks}")
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.in_groups = in_groups
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.num_tasks = num_tasks
        self.vocab_size = vocab_size

        def patch_embed():
            return PatchEmbed(input_size, patch_size, in_groups * in_channels, hidden_size)

        if num_tasks:
            self.x_embedder = PatchEmbedRouter([patch_embed() for _ in range(num_tasks)])
        else:
            self.x_embedder = patch_embed()
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob, num_tasks)
        # No text path at vocab_size = 0, so a text-less model has exactly the released DiT's keys.
        # Registered even as None, so a path added later (add_text) takes this place in parameters(): a resumed
        # run rebuilds the model from its config, and its optimizer state is matched to parameters by position.
        self.register_module("text_embedder", TextEmbedder(vocab_size, hidden_size) if vocab_size else None)
        num_patches = self.x_embedder.num_patches
        # Fixed sin-cos embedding, a frozen Parameter (not a buffer) because released checkpoints store it.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.checkpoint_activations = False  # train.checkpoint_activations: recompute blocks in backward
        self.initialize_weights()

    def patch_embedders(self):
        """Every PatchEmbed of the model: the single one, or one per task of the router."""
        return list(self.x_embedder.embedders) if isinstance(self.x_embedder, PatchEmbedRouter) else [self.x_embedder]

    @torch.no_grad()
    def initialize_weights(self):
        """DiT's init: xavier Linear/conv, N(0, 0.02) embeddings, zeros for every adaLN output and the head."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.pos_embed.copy_(sincos_2d(self.hidden_size, self.x_embedder.grid_size)[None])  # (1, N, D)
        for embed in self.patch_embedders():
            # Xavier on the conv viewed as a Linear (D, C*p*p), like DiT.
            w = embed.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(embed.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.text_embedder is not None:
            self.text_embedder.reset_parameters()  # undo the xavier of the loop above: its proj starts at zero
        # adaLN-Zero: zero gates make every residual block the identity at init, and the zero head makes the
        # whole model output 0 (so the first loss is that of predicting eps = 0).
        gates = [block.adaLN_modulation[-1] for block in self.blocks]
        for linear in gates + [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def unpatchify(self, x):
        """Tokens (B, N, p*p*C_out) -> images (B, C_out, H, W)."""
        c, p, h = self.out_channels, self.patch_size, self.x_embedder.grid_size
        x = x.reshape(x.shape[0], h, h, p, p, c)  # (B, h, w, p, p, C)
        x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, h, p, w, p)
        return x.reshape(x.shape[0], c, h * p, h * p)  # (B, C, H, W)

    def check_input(self, x):
        """Raise a ValueError naming what is wrong with x's shape."""
        want_c = self.in_groups * self.in_channels
        if x.ndim != 4 or x.shape[1] != want_c:
            raise ValueError(
                f"x must be (B, {want_c}, H, W) ({self.in_groups} group(s) of {self.in_channels} channels), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"x has spatial size {tuple(x.shape[-2:])} but this DiT was built for input_size="
                f"{self.input_size} (its positional embedding is fixed); build it with input_size={x.shape[-1]}"
            )

    def forward(self, x, t, y, task=None, force_drop_ids=None, tokens=None):
        """x (B, G*C, H, W), t (B,) timesteps 0..999 (long or float), y (B,) labels, task (B,) for router models.

        force_drop_ids (B,): 1 where the label is replaced by the null id; given, it replaces the random
        dropout, so train.py can draw the drops with the rest of its batch plan (exact resume, DDP = 1 rank).
        tokens (B, L) long, 0 = padding, for text models only; None is the null text. Text dropout is the
        caller's: it zeroes the dropped rows (force_drop_ids drops labels only).
        """
        self.check_input(x)
        if isinstance(self.x_embedder, PatchEmbedRouter):
            x = self.x_embedder(x, task)  # (B, N, D)
        else:
            if task is not None:
                raise ValueError("task given, but this model has one patch embedding; call make_multitask first")
            x = self.x_embedder(x)  # (B, N, D)
        x = x + self.pos_embed  # (B, N, D), N = H*W/p**2
        c = self.t_embedder(t) + self.y_embedder(y, self.training, force_drop_ids)  # (B, D)
        if self.text_embedder is not None:
            if tokens is None:  # null text as (B, 0) ids: adds 0, yet keeps the text path in the graph for DDP
                tokens = torch.zeros(x.shape[0], 0, dtype=torch.long, device=x.device)
            self.text_embedder.check(tokens, x.shape[0])
            c = c + self.text_embedder(tokens)  # (B, D)
        elif tokens is not None:
            raise ValueError("tokens given, but this model has no text path (vocab_size=0); call add_text first")
        recompute = self.checkpoint_activations and torch.is_grad_enabled()  # memory for compute, in training
        for block in self.blocks:
            x = checkpoint(block, x, c, use_reentrant=False) if recompute else block(x, c)  # (B, N, D)
        x = self.final_layer(x, c)  # (B, N, p*p*C_out)
        return self.unpatchify(x)  # (B, C_out, H, W)


# ----------------------------------------------------------------------------------------------------------
# Perception fine-tuning: input widening (Marigold) and the per-task patch-embedding router
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def widen_input(model, groups):
    """Make `model` take `groups` groups of its in_channels (conditions first, noisy target last); in place.

    Each patch-embedding conv gets its weight repeated `groups` times along the input-channel axis and
    divided by `groups` (Marigold: x0.5 for RGB + target; the scaling paper's release: x1/3 for three
    groups). The widened conv applied to G copies of one latent sums G equal terms / G, i.e. computes
    exactly the original embedding, so fine-tuning starts from the pre-trained function. out_channels is
    unchanged (the model still predicts the target only). Widen BEFORE building the optimizer: the conv
    is a new Parameter.
    """
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    if model.in_groups != 1:
        raise ValueError(f"model is already widened (in_groups={model.in_groups}); widen a model with in_groups=1")
    return _set_input_groups(model, groups, lambda w: w.repeat(1, groups, 1, 1) / groups)  # (D, G*C, p, p)


def _set_input_groups(model, groups, weight_fn):
    """Replace every patch-embedding conv by one reading `groups` input groups: weight weight_fn(old weight)
    (D, groups*C, p, p), the same bias. The convs are new Parameters: build the optimizer after."""
    for embed in model.patch_embedders():
        old = embed.proj
        new = nn.Conv2d(
            groups * model.in_channels, old.out_channels, old.kernel_size, old.stride,
            device=old.weight.device, dtype=old.weight.dtype,
        )  # fmt: skip
        new.weight.copy_(weight_fn(old.weight))
        new.bias.copy_(old.bias)
        embed.proj = new
    model.in_groups = groups
    model.config["in_groups"] = groups
    return model


@torch.no_grad()
def make_multitask(model, num_tasks, class_groups=None):
    """Give `model` one patch embedding per task and one label row per task; in place.

    The router's entries all start as copies of the current embedder (widened or not: this composes with
    widen_input in either order). Task k's label is `num_classes + 1 + k` (after the null row, see the
    module docstring), initialised as the mean of the class rows in class_groups[k] (the scaling paper's
    release initialises its task rows from means of class-embedding groups). class_groups: list of
    num_tasks lists of class ids; default splits the classes into num_tasks contiguous groups.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")
    if model.num_tasks:
        raise ValueError(f"model is already multi-task (num_tasks={model.num_tasks})")
    num_classes = model.num_classes
    if class_groups is None:
        class_groups = [g.tolist() for g in torch.arange(num_classes).tensor_split(num_tasks)]
    if len(class_groups) != num_tasks:
        raise ValueError(f"class_groups has {len(class_groups)} groups, expected num_tasks={num_tasks}")
    for k, group in enumerate(class_groups):
        if len(group) == 0 or any(not 0 <= c < num_classes for c in group):
            raise ValueError(f"class_groups[{k}]={group!r} must be a non-empty list of class ids in 0..{num_classes - 1}")

    model.x_embedder = PatchEmbedRouter([_copy_patch_embed(model.x_embedder) for _ in range(num_tasks)])
    table = model.y_embedder.embedding_table.weight
    return _append_label_rows(model, [table[torch.tensor(g, device=table.device)].mean(0) for g in class_groups])


@torch.no_grad()
def add_condition_groups(model, groups):
    """Give a widened model (in_groups >= 2) `groups` input groups by inserting zero-weight condition groups
    just before the noisy target's group; in place. The new groups are read with zero weight, so the model's
    function is unchanged (a single-task model joining a generalist, which feeds every task a second condition
    image or a blank one). Before building the optimizer: the convs are new Parameters."""
    if model.in_groups < 2 or groups < model.in_groups:
        raise ValueError(f"add_condition_groups: a widened model with in_groups={model.in_groups} cannot go to "
                         f"{groups} groups (widen_input widens an unwidened model)")
    C, extra = model.in_channels, groups - model.in_groups

    def insert_zero_groups(w):  # (D, G*C, p, p) -> (D, groups*C, p, p): conditions, zeros, the noisy target last
        return torch.cat([w[:, :-C], w.new_zeros(w.shape[0], extra * C, *w.shape[2:]), w[:, -C:]], dim=1)
    return _set_input_groups(model, groups, insert_zero_groups)


@torch.no_grad()
def add_tasks(model, num_tasks):
    """Grow a single-task model (num_tasks = 1) to `num_tasks` router entries and label rows, each new one a copy
    of task 0's; in place. Every task starts from the single-task model's function; task 0 keeps its id."""
    if model.num_tasks != 1 or num_tasks < 1:
        raise ValueError(f"add_tasks grows a single-task model; this one has num_tasks={model.num_tasks}")
    first = model.x_embedder.embedders[0]
    model.x_embedder = PatchEmbedRouter([first] + [_copy_patch_embed(first) for _ in range(num_tasks - 1)])
    task0 = model.y_embedder.embedding_table.weight[-1]  # task 0's row is the table's last
    return _append_label_rows(model, [task0] * (num_tasks - 1))


def _append_label_rows(model, rows):
    """Append label rows (each (D,)) after the table's last, one per new task: the classes, the null row and
    earlier tasks keep their ids. A new Parameter: build the optimizer after."""
    old = model.y_embedder.embedding_table
    new = nn.Embedding(old.num_embeddings + len(rows), old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    new.weight[: old.num_embeddings] = old.weight
    if rows:
        new.weight[old.num_embeddings:] = torch.stack(rows)  # (new tasks, D)
    model.y_embedder.embedding_table = new
    model.num_tasks = model.num_tasks + len(rows)
    model.config["num_tasks"] = model.num_tasks
    return model


@torch.no_grad()
def add_text(model, vocab_size):
    """Give `model` (a DiT or DiTMoE) the text path over token ids 0..vocab_size-1 (0 = padding); in place.

    The new TextEmbedder's projection is zero, so the model computes exactly its previous function for
    any tokens, and fine-tuning from a text-less checkpoint starts there. Add it BEFORE building the
    optimizer (new Parameters) and after loading the text-less weights.
    """
    if model.text_embedder is not None:
        raise ValueError(f"model already has a text path (vocab_size={model.vocab_size})")
    weight = model.t_embedder.mlp[0].weight
    model.text_embedder = TextEmbedder(vocab_size, model.hidden_size).to(device=weight.device, dtype=weight.dtype)
    model.vocab_size = vocab_size
    model.config["vocab_size"] = vocab_size
    return model


def _copy_patch_embed(embed):
    """An independent copy of a PatchEmbed (same weights, new Parameters)."""
    copy = PatchEmbed(embed.img_size, embed.patch_size, embed.proj.in_channels, embed.proj.out_channels)
    copy.to(device=embed.proj.weight.device, dtype=embed.proj.weight.dtype)
    copy.load_state_dict(embed.state_dict())
    return copy


def task_label(model, k):
    """The label id of task k in a multi-task model: num_classes + 1 + k (after the null row)."""
    if not 0 <= k < model.num_tasks:
        raise ValueError(f"task {k} has no label; this model has num_tasks={model.num_tasks}")
    return model.num_classes + 1 + k


# ----------------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------------

# Architecture only (depth, width, heads, patch); input_size, in_channels, num_classes, ... come from
# build_dit's overrides (DiT's defaults: 32x32x4 SD-VAE latents of 256 px images, 1000 classes).
DIT_PRESETS = {}
for _size, (_depth, _hidden, _heads) in {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}.items():
    for _patch in (2, 4, 8):
        DIT_PRESETS[f"DiT-{_size}/{_patch}"] = dict(depth=_depth, hidden_size=_hidden, num_heads=_heads, patch_size=_patch)
# The scaling paper's dense family (papers/001 Table 1): width and depth grow together, 16 heads, patch 2.
for _name, (_hidden, _depth) in {"a1": (256, 12), "a2": (512, 16), "a3": (768, 20), "a4": (1024, 24), "a5": (1536, 28), "a6": (1792, 32)}.items():
    DIT_PRESETS[_name] = dict(depth=_depth, hidden_size=_hidden, num_heads=16, patch_size=2)
# CPU sizes. "tiny": the laptop pre-training preset, for 32x32 pixel-space images (input_size=32,
# in_channels=3): 64 tokens of width 96, ~1.1M parameters (0.05 GMACs per image). Sized for many optimiser
# steps in ~5 CPU minutes: at batch 64 it trains ~1.8x faster than width 128 (bench_dit.py, 2 cores), and
# for a short budget the number of steps matters more than width. "micro": unit tests only (~83K
# parameters with 1000 classes; use input_size 8).
DIT_PRESETS["tiny"] = dict(depth=6, hidden_size=96, num_heads=4, patch_size=4)
DIT_PRESETS["micro"] = dict(depth=2, hidden_size=32, num_heads=2, patch_size=2)
# tiny with a 15 D MLP (1440 wide): the active MACs per token of tiny-8E2A (two SwiGLU experts of 4 D and a shared
# one of 2 D: 30 D^2 + D E against the dense 2 D x 15 D; 126.3M against 126.6M per sample), the dense side of
# §3.2 at equal active compute (configs/sweeps/moe_equal_active.yaml).
DIT_PRESETS["tiny-mlp15"] = dict(DIT_PRESETS["tiny"], mlp_ratio=15.0)


def preset_builder(arch, cls=None):
    """A function building `cls` (default DiT) from preset `arch` plus constructor overrides (moe.py reuses it)."""
    def build(**overrides):
        return (cls or DiT)(**{**arch, **overrides})

    return build


DiT_models = {name: preset_builder(arch) for name, arch in DIT_PRESETS.items()}


def build_dit(name, **overrides):
    """Build preset `name` (see DiT_models), with constructor overrides, e.g. build_dit("tiny", in_channels=3)."""
    if name not in DiT_models:
        raise ValueError(f"unknown DiT preset {name!r}; valid presets: {', '.join(DiT_models)}")
    return DiT_models[name](**overrides)
