"""Evaluation: a loop over a run's tasks, each scored by its own object on the validation scenes.

`evaluate(model, cfg, out_dir, device)` is what train.py runs at the end of training and what sample.py runs on a
saved checkpoint, so the numbers a run reports are the numbers sample.py reproduces. For each task of the run
(tasks.run_tasks: one, or a generalist's) an `Evaluation` context runs the sampler (M members x DDIM(N steps) per
validation batch, minidp/sampling.py) and the task object (minidp/tasks/) merges, scores and draws:

    task       metric (eval.json keys)              members merged by        baseline (prior_* keys)
    depth      absrel, delta1-3, rmse (aligned)     median | mean | compile  the training set's mean depth map
    flow       epe (pixels, non-occluded pixels)    mean                     zero flow
    amodal     miou of the read-back mask           pixel-wise median        the visible mask as the whole object
    referring  oiou, miou of the red read-back      pixel-wise median        the largest visible object
    normals    angle_mean, angle_median, within_*   normalised mean          the training set's mean normal map
    class      class_accuracy (nearest class mean)  -                        chance

A generalist's eval.json has one section per task, and figures/generalist.png draws the scaling paper's Fig. 11
(one row per task).

sample.intermediates = True also writes intermediates.json: the metric of every sample's clean prediction x0_hat
at every DDIM step of the evaluation chain (ADDP Fig. 1a, and the table minidp.ct_estimation's Algorithm A
reads), and figures/step_metric.png. The last row is the final prediction, so its mean is eval.json's metric
(referring and amodal: miou; depth: absrel; flow: epe, scenes with no valid flow pixel left out). Algorithm A wants
one step per timestep group: sample.steps = 10 with trailing spacing.
Letters: M members, B batch, C channels, H, W image size, S recorded steps, N samples.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch

from minidp import data, files, sampling, schedules, tasks, viz

# ----------------------------------------------------------------------------------------------------------
# Per-step metrics: ADDP's Fig. 1a and the table of its Algorithm A (sample.intermediates)
# ----------------------------------------------------------------------------------------------------------

class StepRecorder:
    """Collects the per-sample metric of x0_hat at every DDIM step, batch by batch: Q (S, N), noisiest first."""

    def __init__(self, cfg, task):
        self.cfg, self.task = cfg, task
        self.timesteps, self.columns = None, []

    def add(self, batch, steps):
        """steps: [(t, members (M, b, C, H, W))] in sampling order. Scenes without a score (flow: no valid pixel)
        are left out."""
        self.timesteps = [t for t, _ in steps]
        score = lambda m: self.task.scores(self.task.merge(m, self.cfg), batch, None)[self.task.metric]  # noqa: E731
        Q = torch.stack([score(m).double() for _, m in steps])  # (S, b): the merged members' metric at each step
        self.columns.append(Q[:, ~Q[-1].isnan()])

    def write(self, out_dir):
        """intermediates.json (minidp.ct_estimation's input format) and figures/step_metric.png; the dict."""
        d, task = self.cfg.diffusion, self.task
        name = self.cfg.sample.schedule or d.schedule
        record = {"timesteps": self.timesteps, "metric": task.step_metric_name or task.metric,
                  "higher_is_better": task.higher_is_better, "T": d.T,
                  "schedule": schedules.SCHEDULE_ALIASES.get(name, name), "task": task.name,
                  "steps": self.cfg.sample.steps, "spacing": self.cfg.sample.spacing,
                  "Q": torch.cat(self.columns, dim=1).tolist()}  # (S, N)
        path = Path(out_dir) / "intermediates.json"
        path.write_text(json.dumps(record) + "\n")
        plot_step_metrics({"this run": path}, figures_dir(out_dir) / "step_metric.png")
        return record


def plot_step_metrics(runs, path):
    """ADDP's Fig. 1a: the mean metric of x0_hat at each denoising step, one curve per {name: intermediates.json}."""
    curves, metric = {}, "metric"
    for label, file in runs.items():
        rec = json.loads(Path(file).read_text())
        Q = torch.tensor(rec["Q"], dtype=torch.float64)  # (S, N)
        curves[label] = (list(range(1, len(Q) + 1)), Q.mean(dim=1).tolist())
        metric = rec["metric"]
    viz.plot_curves(curves, path, xlabel="denoising step (1 = the noisiest)", ylabel=f"mean {metric} of x0_hat",
                    title="quality along the denoising chain (ADDP Fig. 1a)")


def figures_dir(out_dir):
    path = Path(out_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------------
# The evaluation context a task's `evaluate` works with
# ----------------------------------------------------------------------------------------------------------

_world_train_scenes = {}  # the last train_scenes of the world: {"key": (data config, n, task), "scenes": ...}


class Evaluation:
    """One task of a run on n validation scenes: the model, the data and the figure folder the task object asks
    for. k is the task's index in the run (its router entry and label row)."""

    generate = staticmethod(sampling.generate)  # the sampler, for task objects (minidp.sampling imports tasks)

    def __init__(self, model, cfg, k, task, out_dir, device, n, codec):
        self.model, self.cfg, self.k, self.task, self.out_dir = model, cfg, k, task, out_dir
        self.device, self.n, self.codec = device, n, codec

    def batches(self):
        """Yields (scene indices, batch in pixels, batch in latents) over the n validation scenes."""
        dc, b = self.cfg.data, self.cfg.sample.batch
        for start in range(0, self.n, b):
            idx = list(range(dc.val_offset + start, dc.val_offset + min(start + b, self.n)))
            batch = data.make_batch(dc, idx, self.device, task=self.task)
            yield idx, batch, data.to_latents(batch, self.codec)

    def decode(self, z):
        """Latents -> images in [-1, 1] on the CPU."""
        return self.codec.decode(z.float()).float().cpu()

    def chain(self, scenes, steps=None, spacing=None, intermediates=False):
        """One member's DDIM chain on validation scenes `scenes` (positions 0..): (batch in pixels, z0 or (z0,
        intermediates))."""
        dc = self.cfg.data
        batch = data.make_batch(dc, [dc.val_offset + i for i in scenes], self.device, task=self.task)
        latents = data.to_latents(batch, self.codec)
        fn = sampling.conditioned_fn(self.model, self.cfg, self.k, latents)
        return batch, sampling.generate(fn, self.cfg, latents["target"].shape,
                                        torch.Generator().manual_seed(self.cfg.sample.seed), self.device, steps,
                                        spacing, return_intermediates=intermediates)

    def train_scenes(self, n):
        """The first n training scenes (a real dataset: at most data.train_size), the task's keys. The world's are
        kept for the next call with the same data config, n and task: a process that evaluates again (train.eval_every,
        a sweep's runs, the tests) renders the baselines' 512 scenes once."""
        dc = self.cfg.data
        if dc.dataset != "world":
            return data.render_cache(dc, min(n, dc.train_size), run=[self.task])
        key = (repr(dc), n, self.task.name)
        if _world_train_scenes.get("key") != key:
            _world_train_scenes.update(key=key, scenes=data.render_cache(dc, n, run=[self.task]))
        return _world_train_scenes["scenes"]

    def scenes(self, positions):
        """Validation scenes at `positions` (0..), rendered or read."""
        dc = self.cfg.data
        return data.render_scenes(dc, [dc.val_offset + i for i in positions])

    def figure_path(self, name):
        return figures_dir(self.out_dir) / name


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, cfg, out_dir, device, quick=False, codec=None):
    """Evaluate `model` (EMA weights) as `cfg` says; write eval.json and figures into out_dir; return metrics.

    For each validation batch: M members x DDIM, merged by the task (`merge`), scored per scene (`scores`, the
    baseline's as prior_*), summarised with intervals (tasks/base.py), drawn from the first batch (`figure`).
    Class-conditional pre-training scores generated images instead (its task's own `evaluate`).
    A generalist (train.mode multitask) is evaluated on every task it was trained on, or on sample.task only:
    eval.json holds one section per task, each with a single-task run's keys, and figures/generalist.png one row
    per task. quick (train.eval_every): at most 8 images (20 class samples), and eval.json is left alone. codec: the
    one the model was trained with (default: built from cfg.data, as the checkpoint's config records it)."""
    model.eval()  # no label dropout, whatever the caller did before
    codec = codec or data.make_codec(cfg.data, device)
    run, s = tasks.run_tasks(cfg), cfg.sample
    chosen = [task for task in run if task.name == s.task] if s.task else run
    results, scenes, multitask = {}, {}, cfg.train.mode == "multitask"
    for task in chosen:
        n = min(s.num_images, 20 if task.pretraining else 8) if quick else s.num_images
        ev = Evaluation(model, cfg, run.index(task), task, out_dir, device, n, codec)
        if task.pretraining:
            results[task.name] = task.evaluate(ev)
            print_result(task.name if multitask else "", results[task.name])
            continue
        recorder = StepRecorder(cfg, task) if s.intermediates and not quick and task.metric else None
        t0, parts, shown, prior = time.time(), {}, None, task.prior(ev)
        gen, M = torch.Generator().manual_seed(s.seed), s.ensemble
        for idx, batch, latents in ev.batches():
            if task.text and s.correctional:  # ADDP's correctional guidance: several chains (minidp/sampling.py)
                pred = sampling.corrected_batch(model, cfg, ev.k, task, latents, data.render_scenes(cfg.data, idx),
                                                gen, device, codec)
            else:
                members = lambda z: ev.decode(z).unflatten(0, (M, len(idx)))  # noqa: E731 (M * b, ...) -> (M, b, ...)
                z0 = sampling.generate(sampling.conditioned_fn(model, cfg, ev.k, latents, M), cfg,
                                       (M * len(idx), *latents["target"].shape[1:]), gen, device,
                                       return_intermediates=recorder is not None)
                if recorder is not None:
                    z0, steps = z0
                    recorder.add(batch, [(t, members(z)) for t, _, z in steps])
                pred = task.merge(members(z0), cfg)
            for key, v in task.scores(pred, batch, prior).items():
                parts.setdefault(key, []).append(v)
            shown = shown or (tasks.base.to_cpu(batch), pred)
        per_scene = {k: torch.cat(v) for k, v in parts.items()}
        results[task.name] = {**tasks.base.summarize(per_scene, task.ratio_metrics),
                              "num_images": n, "steps": s.steps, "ensemble": s.ensemble,
                              "schedule": s.schedule or cfg.diffusion.schedule, "spacing": s.spacing,
                              "noise": sampling.noise_kind(cfg), "seconds": time.time() - t0, **task.info(cfg),
                              **tasks.base.intervals(per_scene), "n": n}
        task.figure(ev, *shown, per_scene)
        prefix = f"{task.name}/" if multitask else ""  # eval_scenes.npz: per scene, under "<task>/" in a generalist's
        scenes[f"{prefix}scenes"] = np.arange(cfg.data.val_offset, cfg.data.val_offset + n)
        scenes.update({prefix + k: v.double().numpy() for k, v in per_scene.items()})
        if recorder is not None:  # single-task runs only (a config rule)
            recorder.write(out_dir)
        print_result(task.name if multitask else "", results[task.name])
    if multitask:
        generalist_figure([Evaluation(model, cfg, run.index(t), t, out_dir, device, 1, codec) for t in chosen],
                          figures_dir(out_dir) / "generalist.png")
    result = results if multitask else results[chosen[0].name]
    if not quick:
        files.write_text(Path(out_dir) / "eval.json", json.dumps(result, indent=2) + "\n")  # atomic
        if scenes:
            np.savez(Path(out_dir) / "eval_scenes.npz", **scenes)
    return result


def print_result(name, r):
    """One line: each metric with its interval, e.g. `eval depth | absrel 0.0712 [0.0650, 0.0781] | ...`."""
    values = (f"{k} {v:.4f}" + (" [{:.4f}, {:.4f}]".format(*r[k + "_ci"]) if k + "_ci" in r else "")
              if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if not k.endswith("_ci"))
    print(f"eval {name + ' ' if name else ''}| " + " | ".join(values), flush=True)


def generalist_figure(evaluations, path):
    """The scaling paper's Fig. 11 for the world: one row per task, input, condition, truth and prediction for
    validation scene 0 (one ensemble member, sample.steps DDIM steps)."""
    rows, titles = [], []
    for ev in evaluations:
        batch, z0 = ev.chain([0])
        b = tasks.base.to_cpu(batch)
        condition, cond_title, truth, shown = ev.task.generalist_row(b, ev.decode(z0))
        rows.append([viz.to_image(b["cond"][0][0]), condition, truth, shown])
        titles.append([f"{ev.task.name}: input", cond_title, "truth", "prediction"])
    viz.save_grid(rows, titles, path)


@torch.no_grad()
def paint_expression(model, cfg, device, scene, expression, path, codec):
    """Referring segmentation of a user's expression on validation scene `scene` (ValueError naming a word
    outside the vocabulary), with sample.correctional if set: draws image, painting and mask to `path`; returns
    the mask (H, W)."""
    run = tasks.run_tasks(cfg)
    task = next(t for t in run if t.text)
    tokens = tasks.tokenize([expression])
    idx = [cfg.data.val_offset + scene]
    batch = data.make_batch(cfg.data, idx, device, task=task)
    batch["tokens"] = tokens.to(device)
    gen = torch.Generator().manual_seed(cfg.sample.seed)
    pred = sampling.corrected_batch(model, cfg, run.index(task), task, data.to_latents(batch, codec),
                                    data.render_scenes(cfg.data, idx), gen, device, codec)
    painting, mask = pred["painting"][0], pred["mask"][0]
    rgb = batch["cond"][0][0].cpu()
    viz.save_grid([[viz.to_image(rgb), viz.to_image(painting), viz.overlay_mask(rgb, mask)]],
                  [[f'scene {scene}: "{expression}"', "predicted painting", "predicted mask"]], path)
    return mask
