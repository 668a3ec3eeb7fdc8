"""Latent codecs: the pixel codec is the identity; the SD VAE has diffusers' exact keys, shapes and outputs.

The full-size VAE (~84M parameters) is only ever built on the meta device; every forward pass uses a tiny VAE
with the same structure (widths 8, 16, 4 norm groups), which is what diffusers is compared against.

Run: pytest -q tests/test_vae.py      (the diffusers comparisons need `pip install diffusers`, else they skip)
"""

import pytest
import torch

from minidp import vae

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_groups=4)


def test_pixel_codec_is_identity():
    codec = vae.make_codec("pixel")
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(codec.decode(codec.encode(x)), x)
    assert (codec.channels, codec.downsample) == (3, 1)


def test_unknown_codec_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown codec 'sd'; valid: pixel, sd-vae"):
        vae.make_codec("sd")


def test_pixel_codec_rejects_options():
    with pytest.raises(ValueError, match="pixel codec takes no options, got weights"):
        vae.make_codec("pixel", weights="x.bin")


# ----------------------------------------------------------------------------------------------------------
# The full-size SD VAE: key names and shapes (meta device, no memory, no compute)
# ----------------------------------------------------------------------------------------------------------

def _full_size_shapes():
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in vae.AutoencoderKL().state_dict().items()}


def test_full_size_vae_has_sd_key_count_and_parameter_count():
    # 248 tensors and 83,653,863 parameters: counted on diffusers 0.42.1's AutoencoderKL with SD's config
    # (block_out_channels 128, 256, 512, 512; layers_per_block 2; norm_num_groups 32)
    shapes = _full_size_shapes()
    assert len(shapes) == 248
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 83_653_863


def test_full_size_vae_has_diffusers_names_and_shapes_for_every_kind_of_layer():
    shapes = _full_size_shapes()
    expected = {
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down_blocks.0.resnets.1.norm1.weight": (128,),
        "encoder.down_blocks.1.resnets.0.conv1.weight": (256, 128, 3, 3),
        "encoder.down_blocks.1.resnets.0.conv_shortcut.weight": (256, 128, 1, 1),
        "encoder.down_blocks.2.resnets.1.conv2.weight": (512, 512, 3, 3),
        "encoder.down_blocks.2.downsamplers.0.conv.weight": (512, 512, 3, 3),
        "encoder.mid_block.attentions.0.group_norm.weight": (512,),
        "encoder.mid_block.attentions.0.to_q.weight": (512, 512),
        "encoder.mid_block.attentions.0.to_out.0.bias": (512,),
        "encoder.mid_block.resnets.1.norm2.bias": (512,),
        "encoder.conv_norm_out.weight": (512,),
        "encoder.conv_out.weight": (8, 512, 3, 3),  # mean and log-variance of 4 latent channels
        "quant_conv.weight": (8, 8, 1, 1),
        "post_quant_conv.weight": (4, 4, 1, 1),
        "decoder.conv_in.weight": (512, 4, 3, 3),
        "decoder.mid_block.attentions.0.to_v.weight": (512, 512),
        "decoder.up_blocks.0.resnets.2.conv2.weight": (512, 512, 3, 3),  # 3 resnets per decoder level
        "decoder.up_blocks.2.resnets.0.conv_shortcut.weight": (256, 512, 1, 1),
        "decoder.up_blocks.2.upsamplers.0.conv.weight": (256, 256, 3, 3),
        "decoder.up_blocks.3.resnets.0.conv1.weight": (128, 256, 3, 3),
        "decoder.conv_norm_out.bias": (128,),
        "decoder.conv_out.weight": (3, 128, 3, 3),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    absent = ["encoder.down_blocks.3.downsamplers.0.conv.weight", "decoder.up_blocks.3.upsamplers.0.conv.weight",
              "decoder.up_blocks.0.resnets.3.conv1.weight", "encoder.down_blocks.0.resnets.2.conv1.weight"]
    assert [k for k in absent if k in shapes] == []  # no downsampler / upsampler at the last level


def test_full_size_vae_matches_diffusers_key_for_key():
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ref = _diffusers_vae(diffusers, (128, 256, 512, 512), 2, 32)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == _full_size_shapes()


# ----------------------------------------------------------------------------------------------------------
# Loading weights
# ----------------------------------------------------------------------------------------------------------

def test_legacy_attention_names_load_into_the_same_model():
    torch.manual_seed(0)
    source = vae.AutoencoderKL(**TINY)
    new_to_old = {v: k for k, v in vae.LEGACY_ATTENTION_NAMES.items()}
    legacy = {}
    for key, value in source.state_dict().items():
        for new, old in new_to_old.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[key] = value
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in legacy
    assert "decoder.mid_block.attentions.0.query.bias" in legacy
    target = vae.load_weights(vae.AutoencoderKL(**TINY), legacy)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_bin_file_loads_strict_through_make_codec_and_reproduces_the_encoder(tmp_path):
    torch.manual_seed(0)
    source = vae.make_codec("sd-vae", **TINY)
    path = tmp_path / "diffusion_pytorch_model.bin"
    torch.save(source.model.state_dict(), path)
    codec = vae.make_codec("sd-vae", weights=path, **TINY)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(codec.encode(x), source.encode(x))


def test_safetensors_file_loads_when_the_package_is_installed(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    source = vae.AutoencoderKL(**TINY)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    st.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    codec = vae.make_codec("sd-vae", weights=path, **TINY)
    assert all(torch.equal(codec.model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_wrong_weights_are_one_line_errors_naming_the_file(tmp_path):
    bad = tmp_path / "other.bin"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(vae.VAEWeightsError, match=r"other\.bin: \d+ missing keys .* 1 unexpected keys"):
        vae.make_codec("sd-vae", weights=bad, **TINY)
    wide = tmp_path / "wide.bin"
    torch.save(vae.AutoencoderKL(block_out_channels=(8, 32), layers_per_block=1, norm_groups=4).state_dict(), wide)
    with pytest.raises(vae.VAEWeightsError, match=r"wide\.bin: .* has shape .*, this VAE expects"):
        vae.make_codec("sd-vae", weights=wide, **TINY)
    with pytest.raises(vae.VAEWeightsError, match="missing.bin: no such VAE weights file") as info:
        vae.make_codec("sd-vae", weights=tmp_path / "missing.bin", **TINY)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 256])
def test_codec_shapes_follow_the_downsampling(size):
    torch.manual_seed(0)
    codec = vae.make_codec("sd-vae", block_out_channels=(8, 8, 8, 16), layers_per_block=1, norm_groups=4)
    assert (codec.channels, codec.downsample) == (4, 8)
    z = codec.encode(torch.zeros(1, 3, size, size))
    assert z.shape == (1, 4, size // 8, size // 8)
    assert codec.decode(z).shape == (1, 3, size, size)


def test_codec_encode_is_the_scaled_posterior_mean_and_sample_adds_scaled_noise():
    torch.manual_seed(0)
    codec = vae.make_codec("sd-vae", **TINY)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    mean, logvar = codec.model.moments(x)
    assert torch.allclose(codec.encode(x), 0.18215 * mean)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(codec.encode(x, sample=True, generator=g), 0.18215 * (mean + (0.5 * logvar).exp() * noise))
    z = torch.randn(2, 4, 4, 4)
    assert torch.allclose(codec.decode(z), codec.model.decode(z / 0.18215))


def test_codec_refuses_one_channel_targets_and_sizes_it_cannot_downsample():
    codec = vae.make_codec("sd-vae", **TINY)
    with pytest.raises(ValueError, match="replicate 1-channel targets to 3"):
        codec.encode(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"image size \(8, 9\) must be divisible by 2"):
        codec.encode(torch.zeros(1, 3, 8, 9))


# ----------------------------------------------------------------------------------------------------------
# Against diffusers (the independent reference), same random weights
# ----------------------------------------------------------------------------------------------------------

def _diffusers_vae(diffusers, widths, layers, groups):
    n = len(widths)
    return diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                   up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=widths,
                                   layers_per_block=layers, norm_num_groups=groups, latent_channels=4)


def test_tiny_vae_encode_and_decode_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    widths = (8, 8, 16)
    codec = vae.make_codec("sd-vae", block_out_channels=widths, layers_per_block=2, norm_groups=4)
    for p in codec.model.parameters():  # PyTorch's default init leaves decoder outputs tiny: make them O(1)
        p.data.normal_(0, 0.3)
    ref = _diffusers_vae(diffusers, widths, 2, 4).eval()
    ref.load_state_dict(codec.model.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        posterior = ref.encode(x).latent_dist
        assert torch.allclose(codec.encode(x), posterior.mean * ref.config.scaling_factor, atol=1e-4)
        sample = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(sample, posterior.sample(torch.Generator().manual_seed(1)) * 0.18215, atol=1e-4)
        z = torch.randn(2, 4, 8, 8)
        out = ref.decode(z / ref.config.scaling_factor).sample
        assert out.abs().max() > 0.1  # not a vacuous comparison of near-zero outputs
        assert torch.allclose(codec.decode(z), out, atol=1e-4)
