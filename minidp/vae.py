"""Latent codecs: how images become the tensors the diffusion model sees, and back.

Latent diffusion (Rombach et al. 2022; DiT, Marigold and the scaling paper all build on it) runs the model on a
VAE's latents instead of pixels. Every codec has the same small interface:

    codec.channels     latent channels per image (3 for pixels, 4 for the SD VAE)
    codec.downsample   image size / latent size (1 for pixels, 8 for the SD VAE)
    codec.encode(x)    (B, 3, H, W) in [-1, 1] -> (B, channels, H / downsample, W / downsample)
    codec.decode(z)    the inverse map (only approximately, for the VAE: it is lossy)

Two codecs:
- "pixel" (the default): the identity, so everything runs on a laptop with no pretrained weights.
- "sd-vae": the Stable Diffusion VAE (diffusers' `AutoencoderKL`, written here from scratch with its exact
  state-dict key names, so a user's sd-vae-ft-mse `diffusion_pytorch_model.bin` loads with strict=True).

The SD VAE (the "KL-f8" autoencoder of Rombach et al., their Sec. 3 and App. G):
    encoder E: x (B, 3, H, W) -> moments (B, 8, H/8, W/8) = (mean, logvar) of a diagonal Gaussian q(z | x)
    z = mean + exp(logvar / 2) * n,  n ~ N(0, I)         (the posterior sample; Marigold uses z = mean)
    latent = 0.18215 * z                                    (the scaling factor)
    decoder D: latent / 0.18215 -> x_hat (B, 3, H, W)
Its levels: conv_in -> per level (channels 128, 256, 512, 512) 2 residual blocks and a stride-2 conv (none after
the last level) -> a middle block (residual, single-head self-attention, residual) -> GroupNorm, SiLU, conv_out.
The decoder mirrors it with 3 residual blocks per level and nearest-neighbour x2 upsampling + conv. ~83.7M
parameters in all.

Why 0.18215: the VAE was trained with a very weak KL term (kl_weight 1e-6 in the LDM training config), so its
latents are far from unit variance. The diffusion schedule assumes x0 has unit variance (only then does the forward
process keep Var(x_t) = 1), so Rombach et al. rescale the latents by 1 / their standard deviation, estimated once
on a batch of training images (their App. G; `scale_by_std` in their code): 0.18215 = 1 / 5.49 for SD's VAE.

Notable choices:
- The architecture is configurable (`block_out_channels`, `layers_per_block`, `norm_groups`, `latent_channels`)
  so that the tests build a tiny VAE with the same structure and key names; the defaults are SD's.
- Old diffusers checkpoints (before 0.14, e.g. the sd-vae-ft-mse `.bin` as first uploaded) name the mid-block
  attention `query`, `key`, `value`, `proj_attn`; `rename_legacy_keys` maps them to `to_q`, `to_k`, `to_v`,
  `to_out.0`, as diffusers itself does on load. Nothing else is renamed: any other mismatch is an error.
- The codec's VAE is frozen (Marigold and DiT never train it): encode and decode run under `torch.no_grad`.
- `decode` returns the raw decoder output, not clipped to [-1, 1]: the task decoders (e.g. depth's channel mean)
  clip after averaging, as Marigold does.
- Depth, flow and mask targets go through the same VAE as images: Marigold replicates the 1-channel target to
  3 channels in [-1, 1] (data.encode_depth) and encodes it like an RGB image; the codec insists on 3 channels.

Legend for shape comments: B batch, C channels, H, W spatial, N = H * W tokens.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

SD_SCALING_FACTOR = 0.18215  # 1 / std of SD's first-stage latents (Rombach et al., App. G)


class VAEWeightsError(ValueError):
    """A weights file that cannot become this VAE's state dict; the message is one line naming the file."""


# ----------------------------------------------------------------------------------------------------------
# Building blocks (names follow diffusers so state dicts match key for key)
# ----------------------------------------------------------------------------------------------------------

def _norm(groups, channels):
    return nn.GroupNorm(groups, channels, eps=1e-6)  # SD's VAE uses eps 1e-6 in every GroupNorm


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, c_in, c_out, groups):
        super().__init__()
        self.norm1 = _norm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual (the VAE's only attention)."""

    def __init__(self, channels, groups):
        super().__init__()
        self.group_norm = _norm(groups, channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # diffusers' to_out.1 is a parameter-free Dropout

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, N, C)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)  # (B, N, C) each
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, (B, N, C)
        h = self.to_out[0](h).transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + h


class MidBlock(nn.Module):
    """resnets.0 -> attentions.0 -> resnets.1, at the lowest resolution."""

    def __init__(self, channels, groups):
        super().__init__()
        self.attentions = nn.ModuleList([Attention(channels, groups)])
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Downsample(nn.Module):
    """Stride-2 conv3x3 after padding one zero row / column at the bottom / right only (SD's asymmetric pad)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv3x3."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class EncoderLevel(nn.Module):
    """One encoder resolution: `layers` residual blocks, then (except at the last level) a downsampler."""

    def __init__(self, c_in, c_out, layers, groups, downsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample(c_out)]) if downsample else None

    def forward(self, x):
        for block in self.resnets:
            x = block(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class DecoderLevel(nn.Module):
    """One decoder resolution: `layers` residual blocks, then (except at the last level) an upsampler."""

    def __init__(self, c_in, c_out, layers, groups, upsample):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample(c_out)]) if upsample else None

    def forward(self, x):
        for block in self.resnets:
            x = block(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Encoder(nn.Module):
    def __init__(self, widths, layers, groups, z_channels):
        super().__init__()
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            EncoderLevel(widths[max(i - 1, 0)], w, layers, groups, downsample=i < last) for i, w in enumerate(widths)])
        self.mid_block = MidBlock(widths[-1], groups)
        self.conv_norm_out = _norm(groups, widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 2 * z_channels, 3, padding=1)  # mean and log-variance

    def forward(self, x):
        x = self.conv_in(x)  # (B, widths[0], H, W)
        for level in self.down_blocks:
            x = level(x)  # halves H, W at every level but the last
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 2 z, H / 2^(L-1), W / 2^(L-1))


class Decoder(nn.Module):
    def __init__(self, widths, layers, groups, z_channels):
        super().__init__()
        rev = list(reversed(widths))
        last = len(rev) - 1
        self.conv_in = nn.Conv2d(z_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], groups)
        # one more residual block per level than the encoder (diffusers: layers_per_block + 1)
        self.up_blocks = nn.ModuleList([
            DecoderLevel(rev[max(i - 1, 0)], w, layers + 1, groups, upsample=i < last) for i, w in enumerate(rev)])
        self.conv_norm_out = _norm(groups, widths[0])
        self.conv_out = nn.Conv2d(widths[0], 3, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))  # (B, widths[-1], h, w)
        for level in self.up_blocks:
            x = level(x)  # doubles H, W at every level but the last
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 3, H, W)


class AutoencoderKL(nn.Module):
    """The Stable Diffusion VAE; defaults are SD's (block_out_channels 128, 256, 512, 512, 2 layers, 32 groups)."""

    def __init__(self, block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_groups=32,
                 latent_channels=4):
        super().__init__()
        widths = tuple(block_out_channels)
        if any(w % norm_groups for w in widths):
            raise ValueError(f"every width in block_out_channels={widths} must be divisible by norm_groups={norm_groups}")
        self.block_out_channels, self.latent_channels = widths, latent_channels
        self.encoder = Encoder(widths, layers_per_block, norm_groups, latent_channels)
        self.decoder = Decoder(widths, layers_per_block, norm_groups, latent_channels)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)

    @property
    def downsample(self):
        return 2 ** (len(self.block_out_channels) - 1)

    def moments(self, x):
        """(B, 3, H, W) -> (mean, logvar) of q(z | x), each (B, latent_channels, H / 8, W / 8), unscaled."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)  # (B, z, h, w) each
        return mean, logvar.clamp(-30.0, 20.0)  # diffusers' clamp, so exp() never overflows

    def decode(self, z):
        """Unscaled latents (B, latent_channels, h, w) -> images (B, 3, 8h, 8w)."""
        return self.decoder(self.post_quant_conv(z))


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------

LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_legacy_keys(state_dict):
    """A copy of `state_dict` with pre-0.14 diffusers attention names (…attentions.0.query.weight) renamed to
    today's (…attentions.0.to_q.weight); every other key is kept as is."""
    out = {}
    for key, value in state_dict.items():
        prefix, _, rest = key.partition(".attentions.")
        parts = rest.split(".")
        if rest and len(parts) == 3 and parts[1] in LEGACY_ATTENTION_NAMES:  # "0", "query", "weight"
            key = f"{prefix}.attentions.{parts[0]}.{LEGACY_ATTENTION_NAMES[parts[1]]}.{parts[2]}"
        out[key] = value
    return out


def read_state_dict(path):
    """The tensors of a diffusers VAE weights file: `.safetensors` (when that package is installed) or a
    torch pickle (`.bin`, `.pt`, `.pth`), read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise VAEWeightsError(f"{path}: no such VAE weights file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise VAEWeightsError(f"{path}: reading .safetensors needs the optional package safetensors "
                                  "(pip install safetensors), or use the .bin file") from None
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle that is not a plain tensor dict, or not a torch file at all
        raise VAEWeightsError(f"{path}: not a torch weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VAEWeightsError(f"{path}: expected a flat dict of tensors (a diffusers AutoencoderKL state dict)")
    return state


SD_ARCHITECTURE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)


def infer_architecture(state_dict):
    """The widths, residual blocks per level and latent channels a diffusers VAE state dict was saved with, read
    from its shapes (GroupNorm's group count leaves no trace in them). Keys it cannot find are left out, so
    load_weights reports the mismatch against SD's architecture."""
    state_dict = rename_legacy_keys(state_dict)
    found, widths = {}, []
    while f"encoder.down_blocks.{len(widths)}.resnets.0.conv1.weight" in state_dict:
        widths.append(state_dict[f"encoder.down_blocks.{len(widths)}.resnets.0.conv1.weight"].shape[0])
    if widths:
        found["block_out_channels"] = tuple(widths)
        layers = 0
        while f"encoder.down_blocks.0.resnets.{layers}.conv1.weight" in state_dict:
            layers += 1
        found["layers_per_block"] = layers
    if "post_quant_conv.weight" in state_dict:
        found["latent_channels"] = state_dict["post_quant_conv.weight"].shape[0]
    return found


def key_diff(own, state_dict):
    """How `state_dict` differs from a model's own state dict `own`: (missing keys, unexpected keys, [(key, shape
    in state_dict, shape in own)] of the keys both hold). checkpoint.load_dit_state_dict reports them too."""
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(own[k].shape)) for k in own
              if k in state_dict and state_dict[k].shape != own[k].shape]
    return missing, unexpected, shapes


def load_weights(model, state_dict, source="state dict"):
    """Load `state_dict` (legacy attention names accepted) into `model`, strict; a mismatch is one line."""
    state_dict = rename_legacy_keys(state_dict)
    missing, unexpected, shapes = key_diff(model.state_dict(), state_dict)
    if missing or unexpected:
        raise VAEWeightsError(f"{source}: {len(missing)} missing keys (first: {missing[:2]}), {len(unexpected)} "
                              f"unexpected keys (first: {unexpected[:2]}); is it a diffusers AutoencoderKL?")
    if shapes:
        key, got, want = shapes[0]
        raise VAEWeightsError(f"{source}: {key} has shape {got}, this VAE expects {want}")
    model.load_state_dict(state_dict, strict=True)
    return model


# ----------------------------------------------------------------------------------------------------------
# Codecs
# ----------------------------------------------------------------------------------------------------------

class PixelCodec:
    """The identity codec: the model diffuses pixels directly."""

    name = "pixel"
    channels = 3
    downsample = 1

    def to(self, *args, **kwargs):
        return self  # nothing to move

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def decode_differentiable(self, z: torch.Tensor) -> torch.Tensor:
        return z


class SDVAECodec:
    """The Stable Diffusion VAE as a codec: latents are scaled posterior means (Marigold) or scaled samples.

    weights: a diffusers AutoencoderKL weights file (sd-vae-ft-mse's diffusion_pytorch_model.bin or
    .safetensors); None leaves PyTorch's random initialisation (for tests and the tutorial only).
    The other arguments configure the architecture; None: read from the weights file's shapes (a smaller VAE
    with diffusers' names loads too: the training tests use one), or SD's without a file. GroupNorm groups
    cannot be read from shapes: 32, SD's, unless given.
    """

    name = "sd-vae"
    channels, downsample = 4, 8  # SD's, for the config's checks before any weights are read; instances: their own

    def __init__(self, weights=None, block_out_channels=None, layers_per_block=None, norm_groups=32,
                 latent_channels=None, scaling_factor=SD_SCALING_FACTOR):
        state = read_state_dict(weights) if weights is not None else None
        shape = dict(block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                     latent_channels=latent_channels)
        # An architecture argument left at None is read from the weights file (or is SD's, without one)
        found = infer_architecture(state) if state is not None else {}
        shape = {k: v if v is not None else found.get(k, SD_ARCHITECTURE[k]) for k, v in shape.items()}
        self.model = AutoencoderKL(norm_groups=norm_groups, **shape)
        if state is not None:
            load_weights(self.model, state, source=str(weights))
        self.model.eval().requires_grad_(False)
        self.channels, self.downsample = self.model.latent_channels, self.model.downsample
        self.scaling_factor = scaling_factor

    def to(self, *args, **kwargs):
        """Move the VAE (e.g. `.to("cuda")`, `.to(torch.bfloat16)`); returns the codec."""
        self.model.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor, sample=False, generator=None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8): scaling_factor * (mean, or mean + std * noise)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"encode expects (B, 3, H, W) images in [-1, 1] (replicate 1-channel targets to 3, "
                             f"as Marigold does), got shape {tuple(x.shape)}")
        if x.shape[2] % self.downsample or x.shape[3] % self.downsample:
            raise ValueError(f"image size {tuple(x.shape[2:])} must be divisible by {self.downsample}")
        mean, logvar = self.model.moments(x)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise
        return z * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) scaled latents -> (B, 3, 8h, 8w) images, nominally in [-1, 1] (not clipped)."""
        return self.model.decode(z / self.scaling_factor)

    def decode_differentiable(self, z: torch.Tensor) -> torch.Tensor:
        """decode with the graph kept, so a loss on the image reaches the model that made z (E2E-FT's task loss
        after decoding); the VAE's own weights stay frozen (requires_grad False)."""
        return self.model.decode(z / self.scaling_factor)


CODECS = {"pixel": PixelCodec, "sd-vae": SDVAECodec}


def make_codec(name="pixel", **options):
    """The codec `name`; options go to its constructor (for "sd-vae": weights=PATH and the architecture)."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid: {', '.join(CODECS)}")
    if name == "pixel" and options:
        raise ValueError(f"the pixel codec takes no options, got {', '.join(sorted(options))}")
    return CODECS[name](**options)
