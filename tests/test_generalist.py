"""The generalist (train.mode multitask): one model, per-sample tasks. Claims checked against independent references:
a mixed batch against each task's samples run alone (the single-task path of evaluate.py), the batch plan's task mix
against its weights, resume and 2 gloo ranks against one uninterrupted process, a single-task model grown into a
generalist against the model it came from, and sample.py's per-task report.

Run: pytest -q tests/test_generalist.py     (about half a minute: micro runs, 2 gloo ranks once)
"""

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import sample  # noqa: E402
from helpers import MICRO, run_inprocess, train_ranks, wait_all  # noqa: E402
from minidp import checkpoint, config, data, dit, recipe, sampling, tasks, upcycle, vae  # noqa: E402

WEIGHTS = "{depth: 4, flow: 2.5, amodal: 2.5, referring: 2.5}"
MULTI = ["train.mode=multitask", f"data.tasks={WEIGHTS}", "train.task_loss={amodal: l1}",
         "diffusion.task_timestep_weights={flow: [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]}", "train.global_batch=8"]


def micro_config(*extra):
    return config.load_config(ROOT / "configs" / "depth.yaml", [*MICRO, *MULTI, *extra])


def randomised(model, seed=0):
    """The model with every parameter perturbed: adaLN-Zero's zero gates and head would make all outputs 0, and a
    test comparing zeros with zeros could not fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def generalist(cfg, moe=False):
    torch.manual_seed(0)
    model = checkpoint.initial_model(cfg, vae.make_codec("pixel"))[0]
    if moe:
        model = upcycle.upcycle(model, 4, 2, generator=torch.Generator().manual_seed(0))
    return randomised(model)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "upcycled"])
def test_a_mixed_batch_equals_each_tasks_samples_run_alone(moe):
    cfg = micro_config("train.global_batch=24")
    model, names = generalist(cfg, moe), tasks.run_tasks(cfg)
    plan = recipe.batch_plan(cfg, 0, (3, 16, 16), False, True)
    assert set(plan["task"].tolist()) == set(range(len(names)))  # every task is in the batch
    cache = data.render_cache(cfg.data, cfg.data.train_size, run=names)
    batch = data.make_mixed_batch(cfg.data, names, plan["task"], plan["indices"], cache=cache, pick=plan["pick"])
    x_t, t = plan["noise"], plan["t"]
    with torch.no_grad():
        mixed = model(torch.cat(batch["cond"] + [x_t], 1), t, dit.task_label(model, 0) + batch["task"],
                      task=batch["task"], tokens=batch["tokens"])
        for k, task in enumerate(names):
            rows = (plan["task"] == k).nonzero().flatten()
            alone = data.make_batch(cfg.data, plan["indices"][rows], pick=plan["pick"][rows], task=task)
            # evaluation's own path: a blank second condition where the task has none, no tokens (None) except for
            # referring, whose two-scale guidance at (1, 1) is e(I, D), the plain text-and-image prediction
            cfg.sample.image_guidance = cfg.sample.text_guidance = 1.0
            expected = sampling.conditioned_fn(model, cfg, k, alone)(x_t[rows], t[rows])
            assert torch.allclose(mixed[rows, :3], expected, atol=1e-5), task.name
    assert mixed.abs().mean() > 0.1  # the outputs are not trivially equal


def test_the_batch_plans_task_mix_follows_the_weights():
    cfg = micro_config("train.global_batch=10000")
    plan = recipe.batch_plan(cfg, 0, (1, 1, 1), False, True)
    names, task = tasks.run_tasks(cfg), plan["task"]
    assert [t.name for t in names] == ["depth", "flow", "amodal", "referring"]  # the router order: by registry order
    for k, w in enumerate([4, 2.5, 2.5, 2.5]):
        assert (task == k).float().mean().item() == pytest.approx(w / 11.5, abs=0.02)
    # flow's own timestep weights (all on the last group); the others keep depth.yaml's weights
    assert (plan["t"][task == 1] >= 900).all() and (plan["t"][task == 0] < 900).any()
    # condition drops: referring samples only, 5 % + 5 % + 5 % of them
    referring = task == 3
    assert not (plan["drop_text"] | plan["drop_image"])[~referring].any()
    assert (plan["drop_text"] | plan["drop_image"])[referring].float().mean().item() == pytest.approx(0.15, abs=0.03)
    # the per-sample loss kinds: L1 for amodal only
    assert recipe.loss_kinds(cfg).tolist() == [False, False, True, False]


def test_per_sample_loss_kinds_equal_each_kind_alone():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 3, 2, 2, generator=g)
    mask = torch.ones(4, 2, 2, dtype=torch.bool)
    l1 = torch.tensor([True, False, True, False])
    mixed = recipe.masked_loss(pred, target, mask, l1)
    by_hand = ((pred - target).abs()[l1].mean((1, 2, 3)).sum() + ((pred - target) ** 2)[~l1].mean((1, 2, 3)).sum()) / 4
    assert mixed.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_a_single_task_model_grown_into_a_generalist_keeps_its_function():
    codec = vae.make_codec("pixel")
    single = randomised(checkpoint.initial_model(config.load_config(ROOT / "configs" / "depth.yaml", MICRO), codec)[0])
    grown = checkpoint.for_task(copy.deepcopy(single), micro_config(), codec)
    assert (grown.in_groups, grown.num_tasks, grown.vocab_size) == (3, 4, len(tasks.VOCAB))
    g = torch.Generator().manual_seed(1)
    rgb, x_t = torch.randn(5, 3, 16, 16, generator=g), torch.randn(5, 3, 16, 16, generator=g)
    t, zero = torch.randint(0, 1000, (5,), generator=g), torch.zeros(5, dtype=torch.long)
    with torch.no_grad():
        before = single(torch.cat([rgb, x_t], 1), t, dit.task_label(single, 0) + zero, task=zero)
        for k in range(4):  # every task starts as the depth model (with any second condition: its weights are 0)
            task = zero + k
            after = grown(torch.cat([rgb, torch.randn(5, 3, 16, 16, generator=g), x_t], 1), t,
                          dit.task_label(grown, 0) + task, task=task)
            assert torch.allclose(before, after, atol=1e-5)
    assert before.abs().mean() > 0.1


def losses(out_dir):
    return [json.loads(line)["loss"] for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def params(out_dir):
    return torch.load(Path(out_dir) / "ckpt.pt", weights_only=True)["model"]


def test_a_generalist_resumes_exactly(tmp_path):
    assert run_inprocess(tmp_path / "full", *MULTI, "train.steps=4") == 0
    assert run_inprocess(tmp_path / "split", *MULTI, "train.steps=2") == 0
    assert run_inprocess(tmp_path / "split", *MULTI, "train.steps=4") == 0
    assert losses(tmp_path / "full") == pytest.approx(losses(tmp_path / "split"), abs=0, rel=1e-6)
    a, b = params(tmp_path / "full"), params(tmp_path / "split")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert torch.load(tmp_path / "full" / "ckpt.pt", weights_only=True)["tasks"] == ["depth", "flow", "amodal",
                                                                                     "referring"]


def test_two_gloo_ranks_equal_one_process_in_multitask_mode(tmp_path):
    assert run_inprocess(tmp_path / "one", *MULTI) == 0
    code, err = wait_all(train_ranks(tmp_path / "two", *MULTI, cwd=tmp_path))  # tests/helpers.py
    assert code == 0, err
    a, b = params(tmp_path / "one"), params(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), "DDP parameters differ from 1 process"
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-5)
    torch.manual_seed(0)
    init = checkpoint.initial_model(micro_config(), vae.make_codec("pixel"))[0].state_dict()
    assert any(not torch.allclose(init[k], a[k]) for k in a)  # the parameters really moved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_generalist_trains_and_evaluates_on_one_gpu(tmp_path):
    # the four tasks' batches assembled from the world held on the GPU (amodal and referring pick objects there)
    assert run_inprocess(tmp_path / "gpu", *MULTI, "train.device=cuda") == 0
    assert set(json.loads((tmp_path / "gpu" / "eval.json").read_text())) >= {"depth", "flow", "amodal", "referring"}


@pytest.fixture(scope="module")
def generalist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("generalist")
    assert run_inprocess(out, *MULTI) == 0
    return out


def test_sample_evaluates_every_task_the_checkpoint_knows(generalist_run, tmp_path):
    report = json.loads((generalist_run / "eval.json").read_text())
    single = {"depth": "absrel", "flow": "epe", "amodal": "miou", "referring": "oiou"}
    assert sorted(report) == sorted(single) and all(key in report[t] for t, key in single.items())
    assert (generalist_run / "figures" / "generalist.png").is_file()
    assert sample.main([str(generalist_run), "--out", str(tmp_path / "all")]) == 0
    again = json.loads((tmp_path / "all" / "eval.json").read_text())  # sample.py reproduces training's report
    assert all(again[t][k] == pytest.approx(v) for t in report for k, v in report[t].items() if k != "seconds")
    assert sample.main([str(generalist_run), "sample.task=flow", "--out", str(tmp_path / "flow")]) == 0
    flow = json.loads((tmp_path / "flow" / "eval.json").read_text())
    assert list(flow) == ["flow"] and flow["flow"]["epe"] == pytest.approx(report["flow"]["epe"])


def test_a_task_the_generalist_does_not_know_is_one_line_and_exit_2(generalist_run, capsys):
    assert sample.main([str(generalist_run), "sample.task=class"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not 'class'" in err and "depth, flow, amodal, referring" in err


@pytest.mark.parametrize("override, message", [
    ("data.tasks={depht: 1}", "did you mean 'depth'"),
    ("data.tasks={depth: 0}", "weights > 0"),
    ("train.task_loss={flow: l2}", "mse or l1"),
])
def test_bad_generalist_config_is_one_line(override, message):
    with pytest.raises(config.ConfigError, match=message):
        micro_config(override)


def test_multitask_needs_its_tasks_and_per_task_keys_need_multitask():
    with pytest.raises(config.ConfigError, match="needs data.tasks"):
        config.load_config(ROOT / "configs" / "depth.yaml", [*MICRO, "train.mode=multitask"])
    with pytest.raises(config.ConfigError, match="is for train.mode = 'multitask'"):
        config.load_config(ROOT / "configs" / "depth.yaml", [*MICRO, "train.task_loss={amodal: l1}"])
    with pytest.raises(config.ConfigError, match="does not train"):
        micro_config("data.tasks={depth: 1}")


def test_a_generalist_upcycles_and_continues_through_train_py(generalist_run, tmp_path):
    # configs/generalist_moe.yaml's path: the generalist's EMA weights -> 4 experts, top-2, same tasks; and the dense
    # baseline continued from the same weights. Both start from the same function, so their first losses agree.
    common = [*MULTI, "train.steps=1", "train.lr=1e-9", "train.lr_schedule=constant", "model.upcycle_experts=4"]
    assert run_inprocess(tmp_path / "moe", *common, f"train.upcycle_from={generalist_run}", "train.init_from=") == 0
    assert run_inprocess(tmp_path / "dense", *common, f"train.init_from={generalist_run}") == 0
    moe = torch.load(tmp_path / "moe" / "ckpt.pt", weights_only=True)
    assert moe["model_config"]["num_experts"] == 4 and moe["model_config"]["num_tasks"] == 4
    assert moe["tasks"] == ["depth", "flow", "amodal", "referring"]
    assert losses(tmp_path / "moe") == pytest.approx(losses(tmp_path / "dense"), rel=1e-4)


def test_a_users_expression_on_a_generalist_and_a_resume_with_other_weights_refused(generalist_run, tmp_path, capsys):
    assert sample.main([str(generalist_run), "--expression", "the red sphere", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "figures" / "expression_scene0.png").is_file()
    before = (generalist_run / "ckpt.pt").read_bytes()
    assert run_inprocess(generalist_run, *MULTI, "data.tasks={depth: 1, flow: 1, amodal: 1, referring: 1}") == 2
    assert "was trained with data.tasks" in capsys.readouterr().err
    assert (generalist_run / "ckpt.pt").read_bytes() == before
