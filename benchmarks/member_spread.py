"""What several members still buy on an ambiguous task (issue 23, tutorial 11): amodal completion's per-pixel
disagreement between ensemble members against the error of the merged mask, for one and for several DDIM steps.

    python benchmarks/member_spread.py runs/amodal                      # 10 members, 1 and 10 steps, 256 scenes
    python benchmarks/member_spread.py runs/amodal --members 10 --steps 1 10 --scenes 256

An amodal model paints the whole object on white; each member is one DDIM chain from its own noise, read back as a
mask (gray < 250). Per pixel, the vote v = the fraction of members that say "object"; the disagreement is
min(v, 1 - v): 0 where the members agree, 0.5 where they split in half. The merged mask is the evaluation's (the
median painting read back). Printed and written, for each number of steps:
    - the pixels by disagreement (unanimous, minority <= 20 %, split > 20 %): their share and the merged mask's
      error rate in each, and the share of all errors that fall on pixels where the members disagreed;
    - the occluded part of each object (the true whole minus the visible mask), where completion is a guess: the
      share of its pixels where members disagree and the merged mask's error rate there;
    - per scene, the Pearson correlation of the mean disagreement with 1 - IoU (bootstrap interval over scenes);
    - mIoU of the merged mask against the first member alone, paired over the same scenes: what the ensemble buys.
A figure (tutorials/figures/amodal_member_spread.png): image, visible mask, true whole object, member vote, merged
mask's errors, for four scenes. Results: tutorials/results/member_spread.json (python -m minidp.tables).
Evaluation only, no training: about 3.5 minutes on 2 CPU cores for the defaults (2026-12-03).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common import ROOT, commit, entry, named_verdict

from minidp import checkpoint, config, data, metrics, sampling, stats, tasks, viz

RESULTS = ROOT / "tutorials" / "results" / "member_spread.json"
FIGURE = ROOT / "tutorials" / "figures" / "amodal_member_spread.png"
BINS = (("unanimous", 0.0, 0.0), ("minority <= 20 %", 1e-9, 0.2), ("split > 20 %", 0.2 + 1e-9, 0.5))


def load(run):
    path = checkpoint.resolve(run)
    ckpt = checkpoint.load_checkpoint(path, "member_spread.py")
    cfg = config.config_from_dict(ckpt.get("config", {}), source=str(path))
    if cfg.data.task != "amodal" or cfg.train.mode == "multitask":
        sys.exit(f"error: {run}: an amodal run is needed (this one: data.task {cfg.data.task}, mode {cfg.train.mode})")
    return checkpoint.model_from_checkpoint(ckpt, path, weights="ema").eval(), cfg


@torch.no_grad()
def members_of(model, cfg, task, codec, scenes, M, steps, seed):
    """(batch, member paintings (M, b, 3, H, W), merged prediction) for validation scene positions `scenes`."""
    dc = cfg.data
    batch = data.make_batch(dc, [dc.val_offset + i for i in scenes], torch.device("cpu"), task=task)
    latents = data.to_latents(batch, codec)
    fn = sampling.conditioned_fn(model, cfg, 0, latents, M)
    z0 = sampling.generate(fn, cfg, (M * len(scenes), *latents["target"].shape[1:]), torch.Generator().manual_seed(seed),
                           torch.device("cpu"), steps, "trailing")
    paintings = codec.decode(z0).float().unflatten(0, (M, len(scenes)))
    return batch, paintings, task.merge(paintings, cfg)


def study(model, cfg, M, steps, n, batch_size=32):
    task, codec = tasks.get("amodal"), data.make_codec(cfg.data, torch.device("cpu"))
    cfg = config.apply_overrides(cfg, ["sample.noise=gaussian"])  # members from noise, whatever the run's default
    counts = {name: [0, 0] for name, _, _ in BINS}  # pixels, errors of the merged mask
    hidden = [0, 0, 0]  # the occluded part of the objects (whole and not visible): pixels, disagreed, merged errors
    spread, iou_merged, iou_first, shown = [], [], [], None
    for start in range(0, n, batch_size):
        scenes = list(range(start, min(start + batch_size, n)))
        batch, paintings, merged = members_of(model, cfg, task, codec, scenes, M, steps, cfg.sample.seed + start)
        masks = task.read_back(paintings.flatten(0, 1)).unflatten(0, (M, len(scenes)))  # (M, b, H, W)
        vote = masks.float().mean(dim=0)  # (b, H, W)
        disagree = torch.minimum(vote, 1 - vote)
        gt = batch["gt_mask"]
        wrong = merged["mask"] != gt
        for name, lo, hi in BINS:
            inside = (disagree >= lo) & (disagree <= hi)
            counts[name][0] += int(inside.sum())
            counts[name][1] += int((inside & wrong).sum())
        occluded = gt & ~batch["prior_mask"]
        hidden[0] += int(occluded.sum())
        hidden[1] += int((occluded & (disagree > 0)).sum())
        hidden[2] += int((occluded & wrong).sum())
        spread.append(disagree.flatten(1).mean(1))
        iou_merged.append(metrics.iou(merged["mask"], gt))
        iou_first.append(metrics.iou(masks[0], gt))
        shown = shown or (batch, vote, merged["mask"])
    spread, iou_merged, iou_first = (torch.cat(x).double().numpy() for x in (spread, iou_merged, iou_first))
    pixels, errors = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    r, lo, hi = correlation_ci(spread, 1 - iou_merged)
    gain, glo, ghi = stats.paired_diff_ci(iou_merged, iou_first)
    return {"steps": steps, "members": M, "scenes": n, "bins": {k: {"share": c[0] / pixels, "error_rate": c[1] / max(c[0], 1)}
                                                               for k, c in counts.items()},
            "errors_where_disagreeing": 1 - counts["unanimous"][1] / max(errors, 1), "error_rate": errors / pixels,
            "hidden_disagreed": hidden[1] / max(hidden[0], 1), "hidden_error_rate": hidden[2] / max(hidden[0], 1),
            "corr": (r, lo, hi), "miou_merged": (float(iou_merged.mean()), *stats.bootstrap_ci(iou_merged)),
            "miou_first": (float(iou_first.mean()), *stats.bootstrap_ci(iou_first)), "gain": (gain, glo, ghi)}, shown


def pearson(xy, axis=0):
    """Pearson r of the two columns of xy (..., n, 2) along the scene axis `axis` (bootstrap_ci's stat)."""
    d = xy - xy.mean(axis=axis, keepdims=True)
    a, b = d[..., 0], d[..., 1]
    return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))


def correlation_ci(x, y, n_boot=2000, seed=0):
    """Pearson r of x and y over scenes and its percentile-bootstrap interval (stats.bootstrap_ci: scenes drawn with
    replacement, each scene's pair kept together)."""
    xy = np.stack([x, y], axis=-1)  # (n, 2)
    return float(pearson(xy)), *stats.bootstrap_ci(xy, stat=pearson, n_boot=n_boot, seed=seed)


def figure(shown, path, rows=4):
    batch, vote, merged = shown
    grid, titles = [], []
    for i in range(min(rows, len(vote))):
        v = vote[i].numpy()
        heat = np.stack([v, np.zeros_like(v), 1 - v], axis=-1)  # red: every member says object; blue: none
        grid.append([viz.to_image(batch["cond"][0][i]), viz.to_image(batch["cond"][1][i]), viz.to_image(batch["target"][i]),
                     heat, viz.mask_errors(merged[i], batch["gt_mask"][i])])
        titles.append(["image", "visible mask", "true whole object", "vote: red all, blue none",
                       "merged: hit, extra, missed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    viz.save_grid(grid, titles, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="an amodal run directory (holding ckpt.pt)")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 10])
    p.add_argument("--scenes", type=int, default=256)
    args = p.parse_args(argv)
    if args.members < 2 or min(args.steps) < 1 or args.scenes < 8:
        p.error("--members >= 2, --steps >= 1 and --scenes >= 8")
    try:
        model, cfg = load(args.run)
    except (config.ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runs, version = [], commit()
    for steps in args.steps:
        r, shown = study(model, cfg, args.members, steps, min(args.scenes, cfg.data.val_size))
        if steps == args.steps[0]:
            figure(shown, FIGURE)
        b = r["bins"]
        print(f"{steps} step(s) x {args.members} members, {r['scenes']} scenes: "
              + " | ".join(f"{k}: {100 * v['share']:.1f} % of pixels, error {100 * v['error_rate']:.1f} %"
                           for k, v in b.items())
              + f" | {100 * r['errors_where_disagreeing']:.0f} % of the merged mask's errors where members disagree"
              + f" | occluded part: members disagree on {100 * r['hidden_disagreed']:.1f} %, merged error"
              + f" {100 * r['hidden_error_rate']:.1f} %"
              + f" | corr(disagreement, 1 - IoU) {r['corr'][0]:.2f} [{r['corr'][1]:.2f}, {r['corr'][2]:.2f}]"
              + f" | mIoU merged {r['miou_merged'][0]:.4f}, first member {r['miou_first'][0]:.4f},"
              + f" gain {r['gain'][0]:+.4f} [{r['gain'][1]:+.4f}, {r['gain'][2]:+.4f}]")
        cells = {"steps": str(steps), "members": str(args.members),
                 "split": f"{100 * b['split > 20 %']['share']:.1f} % / {100 * b['split > 20 %']['error_rate']:.0f} %",
                 "minority": f"{100 * b['minority <= 20 %']['share']:.1f} % / "
                             f"{100 * b['minority <= 20 %']['error_rate']:.0f} %",
                 "unanimous": f"{100 * b['unanimous']['share']:.1f} % / {100 * b['unanimous']['error_rate']:.1f} %",
                 "where": f"{100 * r['errors_where_disagreeing']:.0f} %",
                 "hidden": f"{100 * r['hidden_disagreed']:.1f} % / {100 * r['hidden_error_rate']:.0f} %",
                 "verdict": named_verdict(r["gain"][1], r["gain"][2], "merged", "first member", better="higher")}
        runs.append({"name": f"{steps} steps", "seed": 0, "overrides": [f"--steps {steps}"], "commit": version,
                     "command": f"python benchmarks/member_spread.py {args.run} --members {args.members} "
                                f"--scenes {args.scenes} --steps {steps}",
                     "cells": cells,
                     "metrics": {"corr": entry(r["corr"][0], r["corr"][1:], 2),
                                 "merged": entry(r["miou_merged"][0], r["miou_merged"][1:]),
                                 "first": entry(r["miou_first"][0], r["miou_first"][1:]),
                                 "gain": entry(r["gain"][0], r["gain"][1:])}})
    study_json = {"study": "member_spread", "description": "amodal members' disagreement against the merged error",
                  "evidence": f"{min(args.scenes, cfg.data.val_size)} validation scenes, one trained model",
                  "command": f"python benchmarks/member_spread.py {args.run}",
                  "columns": [{"head": "DDIM steps", "cell": "steps"}, {"head": "members", "cell": "members"},
                              {"head": "pixels unanimous (share / error)", "cell": "unanimous"},
                              {"head": "minority <= 20 % (share / error)", "cell": "minority"},
                              {"head": "split > 20 % (share / error)", "cell": "split"},
                              {"head": "errors where members disagree", "cell": "where"},
                              {"head": "occluded part: disagreed / merged error", "cell": "hidden"},
                              {"head": "corr(mean disagreement, 1 - IoU) over scenes", "metric": "corr"},
                              {"head": "mIoU merged", "metric": "merged"}, {"head": "mIoU first member", "metric": "first"},
                              {"head": "merged - first", "metric": "gain"}, {"head": "verdict", "cell": "verdict"}],
                  "runs": runs}
    RESULTS.write_text(json.dumps(study_json, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)} and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
