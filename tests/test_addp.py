"""ADDP wired into training and evaluation (issue 11): timestep sampling and loss scaling, augmentation in the
loop, correctional guidance, per-step metrics, and their bad input.

Each claim is checked against an independent reference: a plain run's bits, a closed form, a frequency count, the
world's own expressions, or a hand-made vote.

Run: pytest -q tests/test_addp.py     (a dozen micro runs of 2-4 steps: ~30 s)
"""

import json
import sys

import pytest
import torch
from helpers import ROOT, run_inprocess

sys.path.insert(0, str(ROOT))
import sample  # noqa: E402
from minidp import checkpoint as ckptlib  # noqa: E402
from minidp import config as cfglib  # noqa: E402
from minidp import ct_estimation, data, ddim, recipe, sampling, schedules, tasks, vae, world  # noqa: E402


def model_state(run_dir):
    return ckptlib.load_checkpoint(run_dir / "ckpt.pt", "test")["model"]


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def cfg_with(*overrides, base="depth.yaml"):
    return cfglib.load_config(ROOT / "configs" / base, list(overrides))


def group_shares(t, groups=10, T=1000):
    return torch.bincount(t // (T // groups), minlength=groups).double() / len(t)


# ----------------------------------------------------------------------------------------------------------
# Timestep sampling (Algorithm B) and loss scaling
# ----------------------------------------------------------------------------------------------------------

def test_loss_scaling_with_uniform_weights_is_plain_training_bit_for_bit(tmp_path):
    assert run_inprocess(tmp_path / "plain", "diffusion.timestep_sampling=uniform") == 0
    flat = "diffusion.timestep_weights=[2,2,2,2,2,2,2,2,2,2]"  # uniform, but through the weighting path
    assert run_inprocess(tmp_path / "loss", flat, "diffusion.timestep_sampling=uniform", "diffusion.ct_usage=loss") == 0
    assert same_weights(model_state(tmp_path / "plain"), model_state(tmp_path / "loss"))
    # not vacuous: non-uniform weights change the loss, hence the weights, with the same t
    assert run_inprocess(tmp_path / "scaled", "diffusion.timestep_sampling=depth_release", "diffusion.ct_usage=loss") == 0
    assert not same_weights(model_state(tmp_path / "plain"), model_state(tmp_path / "scaled"))


def test_loss_weights_by_hand_and_t_stays_uniform_under_loss_scaling():
    cfg = cfg_with("diffusion.timestep_sampling=uniform", "diffusion.timestep_weights=[1,3]", "diffusion.ct_usage=loss")
    # G c_g^2 / sum(c^2) = 2 * [1, 3] / 4 = [0.5, 1.5]: t < 500 is group 0
    assert recipe.loss_weights(cfg, torch.tensor([0, 499, 500, 999])).tolist() == [0.5, 0.5, 1.5, 1.5]
    uniform = cfg_with("diffusion.timestep_sampling=uniform")
    assert torch.equal(recipe.batch_plan(cfg, 3, (1, 1, 1), False, False)["t"],
                       recipe.batch_plan(uniform, 3, (1, 1, 1), False, False)["t"])
    prob = cfg_with("diffusion.timestep_sampling=uniform", "diffusion.timestep_weights=[1,3]")
    assert recipe.loss_weights(prob, torch.tensor([0, 999])).tolist() == [1.0, 1.0]


def test_loss_weights_average_one_under_uniform_t():
    cfg = cfg_with("diffusion.timestep_sampling=depth_release", "diffusion.ct_usage=loss")
    w = recipe.loss_weights(cfg, torch.arange(1000))
    assert w.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert w[999].item() == pytest.approx(33 / 106 * 10, rel=1e-6)  # 33 % of the mass on 10 % of the steps


@pytest.mark.parametrize("sampling", ["ris_release", "depth_release", "depth_quick", "diffusion", "perception"])
def test_timestep_frequencies_follow_the_weights(sampling, tmp_path):
    if sampling == "perception":
        expected = torch.tensor([5, 1, 1, 1, 1, 1, 1, 1, 1, 7], dtype=torch.float64)
        (tmp_path / "w.json").write_text(json.dumps({"weights": expected.tolist()}))
        sampling = f"perception:{tmp_path / 'w.json'}"
    elif sampling == "diffusion":  # the formula summed by hand over each group of depth.yaml's schedule
        a = schedules.NoiseSchedule("scaled_linear", 1000).alpha_bar.double()
        expected = ((1 - a) / a).view(10, 100).sum(1)
    else:
        expected = torch.tensor(ct_estimation.PRESETS[sampling], dtype=torch.float64)
    expected = expected / expected.sum()
    cfg = cfg_with(f"diffusion.timestep_sampling={sampling}", "train.global_batch=200000")
    shares = group_shares(recipe.batch_plan(cfg, 0, (1, 1, 1), False, False)["t"])
    # binomial standard error at n = 200000 is <= 0.0012; 5 of them
    assert (shares - expected).abs().max() < 0.006, (shares.tolist(), expected.tolist())


@pytest.mark.parametrize("preset, vector", [("depth_release", "[1,1,3,7,13,14,8,4,22,33]"),  # depth.yaml's to 2026-12-02
                                            ("depth_quick", "[1,1,1,1,2,2,2,4,16,70]")])  # as the 2026-12-03 study ran
def test_presets_draw_the_same_timesteps_as_the_explicit_vectors_they_replaced(preset, vector):
    old = cfg_with("diffusion.timestep_sampling=uniform", f"diffusion.timestep_weights={vector}")
    new = cfg_with(f"diffusion.timestep_sampling={preset}")
    assert torch.equal(recipe.batch_plan(old, 7, (3, 2, 2), False, False)["t"],
                       recipe.batch_plan(new, 7, (3, 2, 2), False, False)["t"])


# ----------------------------------------------------------------------------------------------------------
# Augmentation in the loop
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["depth", "referring"])
def test_augmentation_of_a_batch_equals_that_of_its_slices(task):
    # what makes 2 ranks x B equal 1 rank x 2B: each sample's augmentation reads only its own plan row
    cfg = cfg_with(f"data.task={task}", "train.augment=2", "train.global_batch=6", "data.resolution=32")
    plan = recipe.batch_plan(cfg, 1, (3, 32, 32), False, task == "referring")
    batch = data.make_batch(cfg.data, plan["indices"], pick=plan["pick"])
    t = torch.full((6,), 900)
    codec = vae.make_codec("pixel")
    whole = recipe.noised_target(cfg, tasks.get(task), batch, batch, codec, t, plan["augment_u"])
    halves = []
    for sl in (slice(0, 3), slice(3, 6)):
        part = data.make_batch(cfg.data, plan["indices"][sl], pick=plan["pick"][sl])
        halves.append(recipe.noised_target(cfg, tasks.get(task), part, part, codec, t[sl], plan["augment_u"][sl]))
    assert torch.allclose(whole, torch.cat(halves), atol=1e-6)
    assert (whole - batch["target"]).abs().max() > 0.05  # and it did corrupt the target at t = 900


def test_referring_augmentation_moves_the_paint_not_the_image():
    # the referring target is painted over the dimmed image: away from the object, nothing may change
    cfg = cfg_with("data.task=referring", "train.augment=1", "train.global_batch=4")
    plan = recipe.batch_plan(cfg, 0, (3, 32, 32), False, True)
    batch = data.make_batch(cfg.data, plan["indices"], pick=plan["pick"])
    out = recipe.noised_target(cfg, tasks.get("referring"), batch, batch, vae.make_codec("pixel"), torch.full((4,), 999),
                               plan["augment_u"])
    near = torch.nn.functional.max_pool2d(batch["gt_mask"][:, None].float(), 9, 1, 4)[:, 0] > 0  # (B, H, W)
    assert torch.equal(out.permute(1, 0, 2, 3)[:, ~near], batch["target"].permute(1, 0, 2, 3)[:, ~near])


def test_augmented_training_resumes_exactly_and_differs_from_plain(tmp_path):
    assert run_inprocess(tmp_path / "full", "train.augment=1", "train.steps=4") == 0
    assert run_inprocess(tmp_path / "half", "train.augment=1", "train.steps=2") == 0
    assert run_inprocess(tmp_path / "half", "train.augment=1", "train.steps=4") == 0  # resumes at step 2
    assert same_weights(model_state(tmp_path / "full"), model_state(tmp_path / "half"))
    assert run_inprocess(tmp_path / "plain", "train.steps=4") == 0
    assert not same_weights(model_state(tmp_path / "full"), model_state(tmp_path / "plain"))


def test_the_loss_is_against_the_clean_target(tmp_path, monkeypatch):
    seen = []
    real = recipe.masked_loss

    def spy(pred, target, mask, kind="mse", weights=None):
        seen.append(target.detach().clone())
        return real(pred, target, mask, kind, weights)

    monkeypatch.setattr(recipe, "masked_loss", spy)
    assert run_inprocess(tmp_path / "aug", "train.augment=2", "train.steps=1") == 0
    cfg = cfg_with("model.preset=micro", "data.resolution=16", "data.train_size=64", "train.global_batch=4")
    plan = recipe.batch_plan(cfg, 0, (3, 16, 16), False, False)
    clean = data.make_batch(cfg.data, plan["indices"], pick=plan["pick"])["target"]
    assert torch.equal(seen[0], clean)  # x0-prediction: the target of the loss is x0 itself, not the blurred one


# ----------------------------------------------------------------------------------------------------------
# Correctional guidance
# ----------------------------------------------------------------------------------------------------------

def test_correctional_combine_with_d_minus_equal_to_d_is_two_scale_guidance():
    g = torch.Generator().manual_seed(0)
    e0, e1, e2 = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    assert torch.equal(ddim.correctional_combine(e0, e1, e2, e2, 1.5, 2.0, 3.0), ddim.two_scale_combine(e0, e1, e2, 1.5, 2.0))


def test_auto_prompts_are_the_other_visible_objects_of_the_scene():
    cfg = cfg_with("data.task=referring", "sample.correctional=auto")
    idx = list(range(cfg.data.val_offset, cfg.data.val_offset + 16))
    batch = data.make_batch(cfg.data, idx)
    prompts, valid = sampling.correctional_prompts(cfg, data.render_scenes(cfg.data, idx), batch["tokens"])
    scenes = world.render(idx, resolution=cfg.data.resolution, seed=cfg.data.seed)
    for i in range(len(idx)):
        query = tasks.detokenize(batch["tokens"][i:i + 1])[0]
        n = int(scenes["num_objects"][i])
        expected = [e for s, e in enumerate(scenes["expressions"][i][:n])
                    if e != query and scenes["ref_masks"][i, s].any()][:3]
        got = [tasks.detokenize(prompts[j, i:i + 1])[0] for j in range(3) if valid[j, i]]
        assert got == expected and query not in got


def test_correctional_evaluation_reports_both_and_d_minus_equal_to_d_is_two_scale(tmp_path):
    run = tmp_path / "ref"
    assert run_inprocess(run, "data.task=referring", "diffusion.timestep_sampling=ris_release", "sample.steps=3",
                         "sample.num_images=4", "sample.batch=4") == 0
    assert sample.main([str(run), "sample.correctional=auto", "sample.ensemble=1", "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert {"oiou", "miou", "plain_oiou", "plain_miou"} <= set(report) and report["correctional"] == "auto"
    # the plain numbers are those of a run without correction
    assert sample.main([str(run), "sample.ensemble=1", "--out", str(tmp_path / "p")]) == 0
    plain = json.loads((tmp_path / "p" / "eval.json").read_text())
    assert (report["plain_oiou"], report["plain_miou"]) == (plain["oiou"], plain["miou"])


# ----------------------------------------------------------------------------------------------------------
# Per-step metrics (sample.intermediates) and the ct_estimation CLI
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task, key", [("referring", "miou"), ("depth", "absrel")])
def test_intermediates_table_ends_with_the_reported_metric_and_feeds_algorithm_a(tmp_path, task, key):
    run = tmp_path / task
    assert run_inprocess(run, f"data.task={task}", "sample.steps=2", "sample.num_images=20", "sample.batch=10",
                         "sample.ensemble=2", "sample.intermediates=true") == 0
    rec = json.loads((run / "intermediates.json").read_text())
    Q = torch.tensor(rec["Q"], dtype=torch.float64)
    assert Q.shape == (2, 20) and rec["timesteps"] == ddim.timesteps(2, "trailing").tolist()
    report = json.loads((run / "eval.json").read_text())
    assert Q[-1].mean().item() == pytest.approx(report[key], abs=1e-6)
    assert (run / "figures" / "step_metric.png").stat().st_size > 0
    if task == "referring":
        return  # a 3-step model paints nothing: IoU 0 for every sample, so Algorithm A has no variance to explain
    assert ct_estimation.main([str(run / "intermediates.json"), "-o", str(tmp_path / "w.json")]) == 0
    assert len(ct_estimation.load_weights(str(tmp_path / "w.json"))) == 10


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights, named", [([1, 2, 3], "has 3 weights"), ([1, -1] + [1] * 8, "non-negative")])
def test_bad_weights_file_is_one_line_and_exit_2(tmp_path, capsys, weights, named):
    (tmp_path / "w.json").write_text(json.dumps({"weights": weights}))
    assert run_inprocess(tmp_path / "run", f"diffusion.timestep_sampling=perception:{tmp_path / 'w.json'}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and named in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, named", [
    (["diffusion.timestep_sampling=ris_releas"], "did you mean 'ris_release'"),
    (["diffusion.timestep_sampling=perception:/nonexistent/w.json"], "neither a weights file nor a preset"),
    (["train.augment=1", "diffusion.prediction=eps"], "needs diffusion.prediction 'x0'"),
    (["train.augment=1", "diffusion.prediction=v"], "needs diffusion.prediction 'x0'"),
    (["sample.correctional=the pink cube"], "sample.correctional"),
])
def test_bad_addp_settings_are_one_line_and_exit_2(tmp_path, capsys, overrides, named):
    assert run_inprocess(tmp_path / "run", *overrides) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and named in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_intermediates_file_without_per_step_metrics_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "eval.json").write_text(json.dumps({"miou": 0.5}))  # a run's report, not its per-step table
    assert ct_estimation.main([str(tmp_path / "eval.json"), "-o", str(tmp_path / "w.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no per-step metrics" in err and "\n" not in err and not (tmp_path / "w.json").exists()
