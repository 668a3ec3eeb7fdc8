"""End-to-end fine-tuning (train.objective e2e, E2E-FT): the task losses, the gradient through the depth alignment,
zero-noise sampling, and an e2e run that resumes exactly and equals itself on 2 gloo ranks.

Run: pytest -q tests/test_e2e.py
"""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from helpers import MICRO, run_inprocess, train_ranks, wait_all  # noqa: E402
from minidp import checkpoint, config, data, recipe, sampling, schedules, tasks, vae  # noqa: E402
from minidp.tasks.depth import affine_invariant_l1  # noqa: E402

E2E = ["train.objective=e2e", "sample.ensemble=1"]


def cfg_with(*overrides):
    return config.load_config(ROOT / "configs" / "depth.yaml", [*MICRO, *overrides])


# ----------------------------------------------------------------------------------------------------------
# The losses


def test_affine_invariant_l1_by_hand():
    # pred (0, 1, 2), target (0, 0, 1): least squares s = cov / var = (1/3) / (2/3) = 1/2, b = 1/3 - 1/2 = -1/6, so
    # s pred + b = (-1/6, 1/3, 5/6) and the errors 1/6, 1/3, 1/6: mean 2/9. The fourth pixel is invalid.
    pred = torch.tensor([[[0.0, 1.0, 2.0, 50.0]]], dtype=torch.float64)
    target = torch.tensor([[[0.0, 0.0, 1.0, -9.0]]], dtype=torch.float64)
    valid = torch.tensor([[[True, True, True, False]]])
    assert affine_invariant_l1(pred, target, valid).item() == pytest.approx(2 / 9, abs=1e-12)


def test_depth_e2e_loss_is_zero_for_an_affine_transform_of_the_truth_and_positive_otherwise():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 8, 8, generator=gen) * 2 - 1
    valid = torch.rand(3, 8, 8, generator=gen) > 0.2
    scale, shift = torch.tensor([3.0, -0.5, 0.01])[:, None, None], torch.tensor([0.2, 7.0, -1.0])[:, None, None]
    garbage = torch.where(valid, 0.0, 100.0)  # the invalid pixels do not count
    assert affine_invariant_l1(scale * target + shift + garbage, target, valid).max() < 1e-5
    other = torch.rand(3, 8, 8, generator=gen)
    assert (affine_invariant_l1(other, target, valid) > 0.05).all()
    # through the task: the target replicated on 3 channels, any affine map of it scores 0
    sample = {"target": target[:, None].expand(-1, 3, -1, -1), "mask": valid}
    assert tasks.get("depth").e2e_loss(0.3 * sample["target"] - 0.1, sample).max() < 1e-5


def test_a_flat_depth_prediction_still_gets_a_gradient():
    # a model whose output layer starts at zero predicts a flat map: with s = 0 the loss would not depend on it
    target = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    pred = torch.zeros(1, 1, 4, requires_grad=True)
    loss = affine_invariant_l1(pred, target, torch.ones(1, 1, 4, dtype=torch.bool))
    assert loss.item() == pytest.approx(1.0)  # |0 + 1.5 - t| = 1.5, 0.5, 0.5, 1.5
    loss.backward()
    assert pred.grad.abs().sum() > 0


def test_normals_e2e_loss_is_zero_for_the_truth_and_two_for_its_negation():
    n = torch.nn.functional.normalize(torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    sample = {"target": n, "mask": torch.ones(2, 6, 6, dtype=torch.bool)}
    task = tasks.get("normals")
    assert task.e2e_loss(2.5 * n, sample) == pytest.approx(torch.zeros(2), abs=1e-6)  # the length does not count
    assert task.e2e_loss(-n, sample) == pytest.approx(torch.full((2,), 2.0), abs=1e-6)


def test_flow_e2e_loss_is_the_mean_l1_in_pixels_over_the_valid_pixels():
    flow = torch.zeros(1, 2, 4, 4)
    sample = {"flow": flow, "mask": torch.zeros(1, 4, 4, dtype=torch.bool)}
    sample["mask"][0, 0, :2] = True
    x0 = torch.zeros(1, 3, 4, 4)
    x0[0, 0, 0, 0] = 1.0  # u of pixel (0, 0): 1 x FLOW_SCALE x 4 px = 0.6 px, one of the 2 valid pixels
    x0[0, 1, 3, 3] = 1.0  # an invalid pixel: not counted
    assert tasks.get("flow").e2e_loss(x0, sample).item() == pytest.approx(0.6 / 2)


def test_tasks_without_a_differentiable_read_back_keep_the_image_space_loss():
    assert tasks.get("amodal").e2e_loss(torch.zeros(1, 3, 2, 2), {}) is None
    assert tasks.get("referring").e2e_loss(torch.zeros(1, 3, 2, 2), {}) is None


def test_without_a_task_loss_e2e_scores_the_decoded_image_against_the_pixel_target():
    # amodal: x0-prediction, so x0 is the output itself; the pixel codec decodes to it; L1 (train.loss) over the mask
    cfg = cfg_with("data.task=amodal", "train.objective=e2e", "sample.ensemble=1", "diffusion.prediction=x0")
    gen = torch.Generator().manual_seed(3)
    out, target = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    mask = torch.rand(2, 4, 4, generator=gen) > 0.5
    t = torch.full((2,), cfg.diffusion.T - 1)
    value = recipe.e2e_loss(cfg, tasks.get("amodal"), out, torch.zeros_like(out), t, {"target": target, "mask": mask},
                            schedules.NoiseSchedule.from_config(cfg.diffusion), vae.make_codec("pixel"), "l1")
    m = mask[:, None].float()
    by_hand = (((out - target).abs() * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * 3).clamp_min(1)).mean()
    assert value.item() == pytest.approx(by_hand.item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# A step


def e2e_step_loss(cfg, model, step=0):
    """recipe.e2e_loss of step `step`'s batch as train.py computes it (pixel codec, one process)."""
    task, codec = tasks.run_tasks(cfg)[0], vae.make_codec("pixel")
    latent = (model.in_channels, model.input_size, model.input_size)
    plan = recipe.batch_plan(cfg, step, latent, class_dropout=False, text=False)
    rows = slice(0, cfg.train.global_batch)
    pixels = data.training_batch(cfg, [task], plan, rows, torch.device("cpu"), data.render_cache(cfg.data, 64))
    batch = data.to_latents(pixels, codec)
    x_t = recipe.model_input(cfg, schedules.NoiseSchedule.from_config(cfg.diffusion), batch["target"], plan, rows)
    cond, y, k, _ = tasks.model_inputs(model, batch, plan["task"][rows], plan["drop_image"][rows],
                                       plan["drop_text"][rows])
    dtype = next(model.parameters()).dtype
    out = model(torch.cat(cond + [x_t], dim=1).to(dtype), plan["t"][rows], y, task=k,
                force_drop_ids=plan["drop_label"][rows])  # as train.py: no label drop the plan did not draw
    return recipe.e2e_loss(cfg, task, out, x_t.to(dtype), plan["t"][rows], pixels,
                           schedules.NoiseSchedule.from_config(cfg.diffusion), codec, cfg.train.loss), plan, x_t


def test_an_e2e_step_sees_zeros_at_t_T_minus_1_and_the_same_scenes_as_a_diffusion_step():
    cfg, diffusion = cfg_with(*E2E), cfg_with()
    torch.manual_seed(0)
    model = checkpoint.initial_model(cfg, vae.make_codec("pixel"))[0]
    loss, plan, x_t = e2e_step_loss(cfg, model)
    assert (plan["t"] == cfg.diffusion.T - 1).all() and (x_t == 0).all()
    other = recipe.batch_plan(diffusion, 0, tuple(x_t.shape[1:]), False, False)
    assert torch.equal(plan["indices"], other["indices"]) and torch.equal(plan["noise"], other["noise"])
    assert not torch.equal(plan["t"], other["t"])  # the diffusion step draws its t
    again = e2e_step_loss(cfg, model)[0]
    assert loss.item() == again.item()  # no noise anywhere: two calls are equal exactly


def test_the_depth_gradient_reaches_the_model_through_the_alignment():
    # float64 micro model: autograd against central differences on parameters of the first block and the last layer
    cfg = cfg_with(*E2E, "train.global_batch=2")
    torch.manual_seed(0)
    model = checkpoint.initial_model(cfg, vae.make_codec("pixel"))[0].double()
    with torch.no_grad():  # DiT zero-initialises its output layer (adaLN-Zero): give it weights, or nothing flows
        for p in model.final_layer.parameters():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    loss = e2e_step_loss(cfg, model)[0]
    loss.backward()
    checked = 0
    for name in ("final_layer.linear.weight", "blocks.0.attn.qkv.weight"):
        p = dict(model.named_parameters())[name]
        for index in [(0, 0), (1, 3)] if p.dim() == 2 else [(0, 0, 0, 0), (2, 1, 0, 1)]:
            with torch.no_grad():
                keep = p[index].item()
                p[index] = keep + 1e-6
                up = e2e_step_loss(cfg, model)[0].item()
                p[index] = keep - 1e-6
                down = e2e_step_loss(cfg, model)[0].item()
                p[index] = keep
            numeric = (up - down) / 2e-6
            assert p.grad[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-9), (name, index)
            checked += abs(numeric) > 1e-8
    assert checked >= 2  # some of the checked entries really move the loss


def test_zero_noise_sampling_is_deterministic_and_gaussian_is_not():
    def x_T(*overrides, seed):
        # x0-prediction of x_t itself: one step returns x_T (clipped to [-1, 1]), so the output shows the start
        return sampling.generate(lambda x, t: x, cfg_with(*overrides, "sample.steps=1"),
                                 (2, 3, 4, 4), torch.Generator().manual_seed(seed), torch.device("cpu"))

    assert torch.equal(x_T(*E2E, seed=0), x_T(*E2E, seed=1))  # auto: zeros for an e2e run
    assert torch.equal(x_T("sample.noise=zeros", "sample.ensemble=1", seed=0),
                       x_T("sample.noise=zeros", "sample.ensemble=1", seed=1))
    assert (x_T(*E2E, seed=0) == 0).all()
    assert not torch.equal(x_T("sample.noise=gaussian", seed=0), x_T("sample.noise=gaussian", seed=1))


# ----------------------------------------------------------------------------------------------------------
# Runs


def losses(out_dir):
    return [json.loads(line)["loss"] for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def test_an_e2e_run_resumes_exactly_and_2_gloo_ranks_equal_one_process(tmp_path):
    ranks = train_ranks(tmp_path / "two", *E2E, "train.steps=4", cwd=tmp_path)  # runs while the others do
    assert run_inprocess(tmp_path / "full", *E2E, "train.steps=4") == 0
    assert run_inprocess(tmp_path / "split", *E2E, "train.steps=2") == 0
    assert run_inprocess(tmp_path / "split", *E2E, "train.steps=4") == 0
    code, err = wait_all(ranks)
    assert code == 0, err
    full = losses(tmp_path / "full")
    assert len(full) == 4 and full == pytest.approx(losses(tmp_path / "split"), abs=0, rel=1e-6)
    assert full == pytest.approx(losses(tmp_path / "two"), rel=1e-5)
    state = {d: torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["model"] for d in ("full", "split", "two")}
    for k in state["full"]:
        assert torch.allclose(state["full"][k], state["split"][k], atol=1e-6)
        assert torch.allclose(state["full"][k], state["two"][k], atol=1e-5)
    e = json.loads((tmp_path / "full" / "eval.json").read_text())
    assert e["noise"] == "zeros" and e["ensemble"] == 1


@pytest.mark.parametrize("overrides, words", [
    (["sample.noise=zeros", "sample.ensemble=5"], "sample.noise = zeros makes every one of sample.ensemble = 5"),
    (["train.objective=e2e"], "sample.noise = zeros (auto: train.objective = 'e2e')"),
    (["train.objective=e2e", "sample.ensemble=1", "train.mode=pretrain", "data.task=class"], "train.mode = 'pretrain'"),
    (["train.objective=e2e", "sample.ensemble=1", "train.augment=1"], "train.augment = 1.0 needs a noised target"),
    (["train.objective=e2ee"], "train.objective"),
])
def test_e2e_misuse_is_one_line_and_exit_status_2(tmp_path, capsys, overrides, words):
    assert run_inprocess(tmp_path / "run", *overrides) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "run").exists()  # found before anything is written
