"""Latent codecs: how images become the tensors the diffusion model sees, and back.

Latent diffusion (DiT, Marigold, the scaling paper) runs the model on a VAE's latents; minidp's default is the
pixel-space codec, whose "latent" is the image itself (DESIGN.md: latents of the pixel codec are the image),
so everything runs on a laptop with no pretrained weights. The Stable Diffusion VAE (4 channels, downsampling
8, scaling factor 0.18215, REFERENCE.md §9) will implement the same small interface:

    codec.channels     latent channels per image (3 for pixels)
    codec.downsample   image size / latent size (1 for pixels)
    codec.encode(x)    (B, 3, H, W) in [-1, 1] -> (B, channels, H / downsample, W / downsample)
    codec.decode(z)    the inverse map
"""

import torch


class PixelCodec:
    """The identity codec: the model diffuses pixels directly."""

    name = "pixel"
    channels = 3
    downsample = 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


CODECS = {"pixel": PixelCodec}


def make_codec(name="pixel"):
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; valid: {', '.join(CODECS)}")
    return CODECS[name]()
