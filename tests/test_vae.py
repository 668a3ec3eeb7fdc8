"""Latent codecs: the pixel codec is the identity and declares its shape.

Run: pytest -q tests/test_vae.py
"""

import pytest
import torch

from minidp import vae


def test_pixel_codec_is_identity():
    codec = vae.make_codec("pixel")
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(codec.decode(codec.encode(x)), x)
    assert (codec.channels, codec.downsample) == (3, 1)


def test_unknown_codec_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown codec 'sd'; valid: pixel"):
        vae.make_codec("sd")
