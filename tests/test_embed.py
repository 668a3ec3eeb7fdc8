"""Tests for minidp/embed.py: sinusoidal timestep and position features and the text embedder.

Each claim is checked against an independent reference: diffusers' embedding helpers (skipped when diffusers
is absent), hand values, and a hand computation of the masked mean. The patch embedding, label table and
router are tested through the model in test_dit.py.

Run: python -m pytest -q tests/test_embed.py
"""

import math

import pytest
import torch

from minidp.dit import build_dit
from minidp.embed import TextEmbedder, sincos_2d, timestep_embedding


def test_timestep_embedding_matches_diffusers_and_hand_values():
    t = torch.tensor([0, 1, 999])
    emb = timestep_embedding(t, 256)
    assert emb.shape == (3, 256)
    # cos first: at t = 0 the first half is 1 and the second half 0; frequency 0 is exactly 1 rad per step
    assert torch.equal(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))
    assert math.isclose(emb[1, 0].item(), math.cos(1.0), abs_tol=1e-6)
    assert math.isclose(emb[1, 128].item(), math.sin(1.0), abs_tol=1e-6)
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    ref = embeddings.get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(emb, ref.float(), atol=1e-5, rtol=0)


def test_pos_embed_matches_diffusers_sincos_and_column_first_layout():
    D, grid = 16, 4
    pos = sincos_2d(D, grid)  # (16 tokens, D)
    # token 1 = row 0, column 1: its first D/2 channels encode column 1 (sin(1 * w_0) = sin 1), the rest row 0
    assert math.isclose(pos[1, 0].item(), math.sin(1.0), abs_tol=1e-6)
    assert torch.equal(pos[1, D // 2 :], pos[0, D // 2 :])
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    ref = embeddings.get_2d_sincos_pos_embed(D, grid, base_size=grid, interpolation_scale=1.0, output_type="pt")
    torch.testing.assert_close(pos, ref.float(), atol=1e-6, rtol=0)
    assert torch.equal(build_dit("micro", input_size=8).pos_embed[0], sincos_2d(32, 4))


def test_text_embedding_is_the_mean_over_non_padding_tokens():
    torch.manual_seed(0)
    text = TextEmbedder(vocab_size=10, hidden_size=4)
    torch.nn.init.normal_(text.proj.weight)
    torch.nn.init.normal_(text.proj.bias)
    E, W, b = text.embedding.weight, text.proj.weight, text.proj.bias
    tokens = torch.tensor([[3, 0, 5, 0], [7, 7, 2, 0], [0, 0, 0, 0]])
    expected = torch.stack([
        W @ ((E[3] + E[5]) / 2) + b,  # padding neither counted nor averaged in
        W @ ((2 * E[7] + E[2]) / 3) + b,  # a repeated word counts twice
        torch.zeros(4),  # null text
    ])  # fmt: skip
    torch.testing.assert_close(text(tokens), expected, atol=1e-6, rtol=0)


def test_text_embedder_starts_with_a_zero_projection_and_rejects_a_vocabulary_without_words():
    text = TextEmbedder(vocab_size=5, hidden_size=4)
    assert torch.equal(text(torch.tensor([[1, 2, 4]])), torch.zeros(1, 4))
    assert text.embedding.weight.abs().sum() > 0  # the embeddings themselves are random (N(0, 0.02))
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2"):
        TextEmbedder(vocab_size=1, hidden_size=4)
