"""Sampling a trained model (minidp/sampling.py): two-scale guidance against the model's own predictions combined
by hand, correctional guidance with D- = D against two-scale sampling, the majority vote by hand.

Run: pytest -q tests/test_sampling.py
"""

import torch

from helpers import referring_cfg, text_model
from minidp import data, ddim, dit, sampling, schedules


def test_two_scale_guidance_with_unit_scales_is_the_fully_conditioned_prediction():
    model, cfg = text_model(), referring_cfg(image_guidance=1.0, text_guidance=1.0)
    batch = data.make_batch(cfg.data, [0, 1, 2])
    x_t, t = torch.randn(3, 3, 16, 16), torch.full((3,), 500)
    guided = sampling.conditioned_fn(model, cfg, 0, batch)(x_t, t)
    y = torch.full((3,), dit.task_label(model, 0))
    plain = model(torch.cat([batch["cond"][0], x_t], 1), t, y, task=torch.zeros(3, dtype=torch.long),
                  tokens=batch["tokens"])
    assert torch.allclose(guided, plain, atol=1e-5)


def test_two_scale_guidance_combines_null_image_and_null_text_predictions():
    model, cfg = text_model(), referring_cfg(image_guidance=1.5, text_guidance=3.0)
    batch = data.make_batch(cfg.data, [0, 1])
    x_t, t = torch.randn(2, 3, 16, 16), torch.full((2,), 999)
    y, task = torch.full((2,), dit.task_label(model, 0)), torch.zeros(2, dtype=torch.long)
    rgb, null_text = batch["cond"][0], torch.zeros_like(batch["tokens"])
    e_none = model(torch.cat([torch.zeros_like(rgb), x_t], 1), t, y, task=task, tokens=null_text)
    e_img = model(torch.cat([rgb, x_t], 1), t, y, task=task, tokens=null_text)
    e_all = model(torch.cat([rgb, x_t], 1), t, y, task=task, tokens=batch["tokens"])
    expected = e_none + 1.5 * (e_img - e_none) + 3.0 * (e_all - e_img)  # InstructPix2Pix Eqn. 3, by hand
    assert torch.allclose(sampling.conditioned_fn(model, cfg, 0, batch)(x_t, t), expected, atol=1e-5)
    assert not torch.allclose(e_all, e_img, atol=1e-4)  # the text path is live, so the test can fail


class PerSampleModel(torch.nn.Module):
    """A stand-in denoiser whose output for a sample depends on that sample only (batch-size independent), on
    the image condition and on the text, so guided chains can be compared bit for bit."""

    def forward(self, x, t, y, task=None, tokens=None):
        image, x_t = x[:, :3], x[:, 3:]
        text = tokens.float().sum(dim=1)[:, None, None, None] / 10  # (B, 1, 1, 1)
        return torch.tanh(x_t * 0.5 + image * text + t[:, None, None, None] / 1000)


def test_correctional_guidance_with_d_minus_equal_to_d_reproduces_two_scale_sampling_exactly():
    g = torch.Generator().manual_seed(1)
    cond, tokens = [torch.randn(2, 3, 4, 4, generator=g)], torch.tensor([[1, 2, 3, 0], [1, 5, 6, 0]])
    y, task = torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    model, x_T, sched = PerSampleModel(), torch.randn(2, 3, 4, 4, generator=g), schedules.NoiseSchedule("linear")
    two = sampling.model_fn_for(model, cond, y, task, tokens, guidance=(1.5, 2.0))
    corr = sampling.model_fn_for(model, cond, y, task, tokens, guidance=(1.5, 2.0, 3.0), neg_tokens=tokens)
    run = lambda fn: ddim.ddim_sample(fn, x_T, sched, steps=5, prediction="x0", spacing="trailing")  # noqa: E731
    assert torch.equal(run(two), run(corr))
    other = sampling.model_fn_for(model, cond, y, task, tokens, guidance=(1.5, 2.0, 3.0), neg_tokens=tokens.flip(0))
    assert not torch.equal(run(two), run(other))  # another D- does change the result


def test_majority_vote_by_hand():
    masks = torch.tensor([[[[1, 1, 0, 0]]], [[[1, 0, 1, 0]]], [[[1, 0, 0, 1]]]], dtype=torch.bool)  # (3, 1, 1, 4)
    plain = torch.tensor([[[0, 1, 1, 1]]], dtype=torch.bool)
    three = torch.ones(3, 1, dtype=torch.bool)
    assert sampling.majority(masks, three, plain).tolist() == [[[True, False, False, False]]]  # 3/3, then 1/3s
    two = torch.tensor([[True], [True], [False]])
    assert sampling.majority(masks, two, plain).tolist() == [[[True, False, False, False]]]  # 2 of 2 needed
    assert sampling.majority(masks, torch.zeros(3, 1, dtype=torch.bool), plain).tolist() == plain.tolist()
