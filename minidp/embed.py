"""DiT's embedders: how an image, a timestep, a label and a text become tokens and the condition c.

From "Scalable Diffusion Models with Transformers" (Peebles & Xie 2023, Sec. 3.1, whose code this follows
key for key) and its perception fine-tuning in "Scaling Properties of Diffusion Models for Perceptual
Tasks" (Ravishankar et al. 2024, papers/001). dit.py assembles them:

    tokens = x_embedder(x) + pos_embed                      (B, N, D), pos_embed = sincos_2d(D, h)
    c = t_embedder(t) + y_embedder(y) [+ text_embedder(tokens)]    (B, D)

    timestep features   [cos(t f_i), sin(t f_i)],  f_i = 10000^(-i/half), i < half = 128 (cos first)
    positions           [sin(x w_i), cos(x w_i), sin(y w_i), cos(y w_i)],  w_i = 10000^(-2i/(D/2)), i < D/4

Shape legend: B batch, C channels, H/W image height/width, p patch size, h/w token grid (H/p, W/p),
N = h*w tokens, D width, K tasks, L text tokens per sample, M positions.

Notable choices:
- Parameter names are DiT's (`x_embedder.proj`, `t_embedder.mlp.{0,2}`, `y_embedder.embedding_table`),
  which timm's PatchEmbed also uses, so released checkpoints load strictly.
- Timestep features put cos first (DiT's `flip_sin_to_cos`); positions put the column (x) index in the first
  D/2 channels, as MAE's `get_2d_sincos_pos_embed` does.
- The label table always has the null (classifier-free guidance) row, even with class_dropout_prob = 0
  (DiT drops the row then); this keeps task label ids stable. No released checkpoint is affected.
- PatchEmbedRouter (the scaling paper's generalist): one patch embedding per task, samples grouped by task
  with one sort, so a mixed batch costs one embedding per sample.
- TextEmbedder: mean-pooled token embeddings through a zero-initialised Linear, added to c (not
  cross-attention), so DiT's block and its keys are untouched and `dit.add_text` leaves a trained model's
  function unchanged; the world's expressions are a few words ("the red sphere"), where order matters little.
"""

import math

import torch
import torch.nn as nn


# ----------------------------------------------------------------------------------------------------------
# Sinusoidal features
# ----------------------------------------------------------------------------------------------------------


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal timestep features (B, dim), cos first: [cos(t * f_i), sin(t * f_i)], f_i = max_period^(-i/half).

    t is the integer timestep 0..999 as a float (B,); DiT feeds it unscaled.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    if dim % 2:  # odd widths get a zero pad column, as in DiT
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_1d(dim, pos):
    """1-D sin-cos features (M, dim) of positions pos (M,): [sin(pos * w_i), cos(pos * w_i)], w_i = 10000^(-2i/dim)."""
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    out = pos.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim), sin first (MAE/DiT order)


def sincos_2d(dim, grid_size):
    """Fixed 2-D sin-cos positional embedding (grid_size**2, dim), tokens in row-major order.

    The first dim/2 channels encode the column (x) index and the last dim/2 the row (y) index: that is
    the order of MAE's `get_2d_sincos_pos_embed`, which DiT uses (its meshgrid puts w first).
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs a width divisible by 4, got hidden_size={dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (h, w) each
    emb_x = sincos_1d(dim // 2, cols.reshape(-1))  # (N, D/2)
    emb_y = sincos_1d(dim // 2, rows.reshape(-1))  # (N, D/2)
    return torch.cat([emb_x, emb_y], dim=1).float()  # (N, D)


# ----------------------------------------------------------------------------------------------------------
# Embedders
# ----------------------------------------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """Scalar timesteps (B,) -> (B, D): 256 sinusoidal features then an MLP."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        # Indices 0 and 2 match DiT's `t_embedder.mlp.{0,2}` keys.
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t):
        t_freq = timestep_embedding(t, self.frequency_embedding_size)  # (B, 256)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (B, D)


class LabelEmbedder(nn.Module):
    """Class labels (B,) -> (B, D); row `num_classes` is the null label used for classifier-free guidance.

    Extra rows after the null row hold task labels (see make_multitask): the table has
    num_classes + 1 + num_tasks rows.
    """

    def __init__(self, num_classes, hidden_size, dropout_prob, num_tasks=0):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1 + num_tasks, hidden_size)

    def token_drop(self, labels, force_drop_ids=None):
        """Replace labels by the null id with probability dropout_prob (or where force_drop_ids == 1)."""
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels, train, force_drop_ids=None):
        # Dropout trains the unconditional model used by guidance; never at evaluation unless forced.
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)  # (B, D)


class TextEmbedder(nn.Module):
    """Token ids (B, L) -> (B, D): embed, mean over the non-padding tokens, then a zero-initialised Linear.

    Id 0 is padding. A row of only padding is the null text (text dropout, the unconditional branch of
    guidance) and contributes exactly zero: the pooled mean is 0 there (an empty sum, divided by a count
    clamped to 1), and the projection's output is multiplied by "has any token", so the bias, however far
    training has moved it, cannot leak into the null text. The Linear starts at zero (weight and bias), so
    a model given this path (add_text) computes exactly what it computed without it.
    """

    def __init__(self, vocab_size, hidden_size):
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2 (id 0 is padding), got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.normal_(self.embedding.weight, std=0.02)  # as DiT's label table
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def check(self, tokens, batch):
        """Raise a ValueError naming what is wrong with tokens (shape, dtype, ids outside the vocabulary)."""
        if tokens.ndim != 2 or tokens.shape[0] != batch or tokens.is_floating_point():
            raise ValueError(f"tokens must be ({batch}, L) integer ids, got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel():
            lo, hi = tokens.min().item(), tokens.max().item()  # one host sync; nn.Embedding's own error is a CUDA assert
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside the vocabulary: valid ids are 0..{self.vocab_size - 1}")

    def forward(self, tokens):
        mask = (tokens != 0).unsqueeze(-1)  # (B, L, 1), False at padding
        count = mask.sum(dim=1)  # (B, 1) real tokens per row
        emb = self.embedding(tokens) * mask  # (B, L, D), padding rows zeroed
        pooled = emb.sum(dim=1) / count.clamp(min=1)  # (B, D) mean over real tokens; 0 for null text
        return self.proj(pooled) * (count > 0)  # (B, D); exactly 0 for null text, bias included


class PatchEmbed(nn.Module):
    """Images (B, C, H, W) -> tokens (B, N, D) by a stride-p convolution (non-overlapping p x p patches)."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"input_size={img_size} is not divisible by patch_size={patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x):
        x = self.proj(x)  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), tokens in row-major order


class PatchEmbedRouter(nn.Module):
    """One PatchEmbed per task, chosen per sample by task id (the scaling paper's generalist model).

    Each sample goes through exactly one embedder, so compute equals a single PatchEmbed's. Samples are
    grouped by task with one sort (no Python loop over the batch); every embedder is called, on an empty
    batch if its task is absent, so all parameters stay in the autograd graph (DDP needs no
    find_unused_parameters).
    """

    def __init__(self, embedders):
        super().__init__()
        self.embedders = nn.ModuleList(embedders)
        first = self.embedders[0]
        self.img_size, self.patch_size = first.img_size, first.patch_size
        self.grid_size, self.num_patches = first.grid_size, first.num_patches

    def forward(self, x, task):
        num_tasks = len(self.embedders)
        if task is None:
            raise ValueError("this model routes its patch embedding by task: pass task=(B,) long task ids")
        if task.shape != (x.shape[0],):
            raise ValueError(f"task must have shape ({x.shape[0]},), got {tuple(task.shape)}")
        if not torch.compiler.is_compiling():  # data-dependent, so a graph break: compiled code trusts the ids
            bad = task[(task < 0) | (task >= num_tasks)]
            if bad.numel():
                raise ValueError(f"task id {bad[0].item()} has no router entry; valid ids are 0..{num_tasks - 1}")
        if num_tasks == 1:  # a one-task model (every fine-tune): nothing to group
            return self.embedders[0](x)
        order = torch.argsort(task, stable=True)  # (B,) samples grouped by task
        counts = torch.bincount(task, minlength=num_tasks).tolist()
        pieces = x[order].split(counts)  # K pieces of (B_k, C, H, W)
        tokens = torch.cat([emb(piece) for emb, piece in zip(self.embedders, pieces)])  # (B, N, D), sorted
        return tokens[torch.argsort(order)]  # (B, N, D), back in batch order
