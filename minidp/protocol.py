"""The paper's benchmarks: Marigold's zero-shot depth protocol, FlyingChairs validation EPE, pix2gestalt's mIoU.

The scaling paper's Table 3 reports AbsRel and delta1 on Hypersim, ETH3D, NYUv2, ScanNet and DIODE "with Marigold's
protocol"; Table 4 the EPE on FlyingChairs' validation split; Table 5 the mIoU on pix2gestalt's held-out split. A
number only compares with the paper's when every step of the protocol is the same, and the steps are easy to get
wrong (Marigold's issue #96: KITTI is the 652 Eigen test frames that have ground truth, not all 697 of the list).
The facts below were read from prs-eth/Marigold (script/depth/eval.py and eval/*.sh); which frames each benchmark
holds, where they lie under --root and how they are read is minidp/benchmark_sets.py.

Evaluation of one depth frame, Marigold's eval.py step by step:
    valid  = min_depth < gt < max_depth, and the benchmark's crop mask (DIODE: its mask file alone)
    s, t   = argmin sum_valid (s * pred + t - gt)^2        least squares in depth: every eval/*.sh passes
             --alignment least_square (ETH3D fits on a copy downsized to at most 1024 px, --alignment_max_res)
    pred   = clip(s * pred + t, min_depth, max_depth), then >= 1e-6
    AbsRel, delta1..3, RMSE over the valid pixels, per frame; the benchmark's value is the mean over frames.
Alignment in disparity (fit pred to 1/gt over valid pixels where pred > 0, clip the disparity at 1e-3, invert) is
Marigold's other option; no benchmark config uses it, `align(..., space="disparity")` provides it.

FlyingChairs: EPE over all pixels of the 640 validation pairs (split file mark 2), mean over pairs (all are 384 x
512, so it equals RAFT's mean over pixels), as Table 4 reports it. minidp's world EPE (evaluate.py) is over
non-occluded pixels only, because the world knows which pixels are occluded; FlyingChairs publishes no occlusion
mask, so its EPE includes the pixels that leave the frame or disappear, and is larger for the same model.
pix2gestalt: the per-sample IoU of the read-back whole-object mask (gray < 250) against whole_mask/, mean over the
held-out last 1 % of the official order (readers.Pix2Gestalt(split="val")).

Notable choices:
- Resolution: the model sees the whole frame resized (bilinear, antialiased) to the run's square R x R, aspect ratio
  not kept, and its prediction is resized back to the ground truth's size (bilinear, as Marigold's pipeline resizes
  its output back); metrics are computed at the ground truth's full resolution over exactly the protocol's pixels.
  A centre crop would keep the aspect ratio but drop most of a KITTI frame (352 x 1216) from the evaluation.
  Flow is rescaled with the image (u by W / R, v by H / R); masks (the visible-object condition) resize nearest.
- Each metric comes with a 95 % percentile-bootstrap interval over frames (minidp.stats.bootstrap_ci) and n;
  eval_<benchmark>.json holds `k`, `k_ci`, `n`, and benchmarks.md the paper's tables with this run's row added,
  generated from those files.
Letters: M ensemble members, b batch, K condition images, H, W the ground truth's size, R the run's resolution.
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minidp import metrics, sampling, tasks
from minidp.benchmark_sets import BENCHMARKS, open_frames
from minidp.errors import InputError

MIN_PRED = 1e-6  # Marigold: "clip to d > 0 for evaluation"
MIN_DISPARITY = metrics.MIN_DISPARITY  # 1e-3, Marigold's floor for aligned disparity


# The papers' rows, in the papers' units (percent; EPE in pixels), for the table next to this run's.
PAPER_ROWS = {
    "depth": {"Marigold (scaling paper, Table 3)": {
                  "hypersim_val": (13.5, 87.5), "eth3d": (6.5, 96.0), "nyuv2": (5.5, 96.4), "scannet": (6.4, 95.1),
                  "diode": (30.8, 77.3)},
              "DiT-XL, the scaling paper (Table 3)": {
                  "hypersim_val": (13.6, 87.6), "eth3d": (4.8, 97.8), "nyuv2": (6.8, 95.0), "scannet": (7.7, 93.7),
                  "diode": (31.0, 77.2)}},
    "flow": {"FlowNetC (Table 4)": {"flyingchairs_val": (2.19,)},
             "DiT-XL w/o ensembling (Table 4)": {"flyingchairs_val": (3.45,)},
             "DiT-XL w/ ensembling (Table 4)": {"flyingchairs_val": (3.08,)}},
    "amodal": {"pix2gestalt (Table 5)": {"pix2gestalt_val": (88.7,)},
               "DiT-XL, the scaling paper (Table 5)": {"pix2gestalt_val": (88.6,)}},
}
# task -> (eval.json key, column header, factor to the paper's unit) of each table column per benchmark
TABLE_COLUMNS = {"depth": [("absrel", "AbsRel ↓", 100), ("delta1", "δ1 ↑", 100)],
                 "flow": [("epe", "EPE ↓", 1)], "amodal": [("miou", "mIoU ↑", 100)]}


def benchmark_names(name, run_tasks):
    """--benchmark NAME (or "all": every benchmark of the run's tasks) -> names; InputError for a benchmark that
    measures a task the run was not trained on."""
    if name == "all":
        names = [b.name for b in BENCHMARKS.values() if b.task in run_tasks]
        if not names:
            raise InputError(f"--benchmark all: no benchmark measures {', '.join(run_tasks)} (the benchmarks measure "
                             "depth, flow and amodal)")
        return names
    if name not in BENCHMARKS:
        raise InputError(f"--benchmark: unknown benchmark {name!r}; valid: all, {', '.join(BENCHMARKS)}")
    task = BENCHMARKS[name].task
    if task not in run_tasks:
        raise InputError(f"--benchmark {name} measures {task}; this run was trained on {', '.join(run_tasks)}")
    return [name]


# ----------------------------------------------------------------------------------------------------------
# Alignment (Marigold's least squares) and per-frame scores
# ----------------------------------------------------------------------------------------------------------

def _downsized(x, max_res):
    """Marigold's --alignment_max_res: nearest-neighbour downsizing by min(max_res / H, max_res / W) when below 1."""
    scale = min(max_res / x.shape[-2], max_res / x.shape[-1]) if max_res else 1.0
    if scale >= 1:
        return x
    src = x.float() if x.dtype == torch.bool else x
    return F.interpolate(src[None, None], scale_factor=scale, mode="nearest")[0, 0].to(x.dtype)


def align(pred, gt, valid, space="depth", max_res=0):
    """pred (H, W) affine-invariant -> depth (H, W) by Marigold's least squares against gt over valid pixels, in
    depth or in disparity (1 / gt; pixels where pred <= 0 sit out, the fitted disparity is floored at 1e-3).
    The fit runs in float64; the result has pred's dtype (an ETH3D frame has 24M pixels)."""
    target = gt
    if space == "disparity":
        valid = valid & (pred > 0)
        target = torch.where(valid, 1 / torch.where(valid, gt, torch.ones_like(gt)), torch.zeros_like(gt))
    elif space != "depth":
        raise ValueError(f"align: space must be 'depth' or 'disparity', got {space!r}")
    small = [_downsized(x, max_res) for x in (pred, target, valid)]
    s, t = metrics.fit_scale_shift(small[0][None].double(), small[1][None].double(), small[2][None])  # (1, 1, 1)
    fitted = s[0].to(pred.dtype) * pred + t[0].to(pred.dtype)
    return fitted if space == "depth" else 1 / fitted.clamp_min(MIN_DISPARITY)


def resize_to(x, size, mode="bilinear"):
    """(C, R, R) -> (C, H, W): a prediction back at the ground truth's size."""
    return F.interpolate(x[None].float(), size=tuple(size), mode=mode, align_corners=False)[0]


def score_depth(merged, frame, bench):
    """merged (R, R) in [0, 1] -> {absrel, delta1..3, rmse} of the frame, by Marigold's evaluation."""
    depth, valid = frame["depth"][None], frame["valid"][None]  # (1, H, W)
    pred = resize_to(merged[None], depth.shape[-2:])[0]
    aligned = align(pred, depth[0], valid[0], bench.align, bench.align_max_res)
    aligned = aligned.clamp(*bench.depth_range).clamp_min(MIN_PRED)[None]  # (1, H, W)
    return {"absrel": metrics.absrel(aligned, depth, valid).item(),
            **{f"delta{k}": metrics.delta(aligned, depth, valid, k).item() for k in (1, 2, 3)},
            "rmse": metrics.rmse(aligned, depth, valid).item()}


def score_flow(merged, frame, bench):
    """merged (2, R, R) pixels at R -> {epe}: over all pixels at the ground truth's size (Table 4)."""
    height, width = frame["flow"].shape[-2:]
    R = merged.shape[-1]
    scale = torch.tensor([width / R, height / R])[:, None, None]  # (2, 1, 1): displacements grow with the image
    pred = resize_to(merged, (height, width)) * scale
    return {"epe": metrics.epe(pred[None], frame["flow"][None].float()).item()}


def score_amodal(merged, frame, bench):
    """merged (3, R, R) whole-object image -> {miou}: this sample's IoU of the read-back mask (its mean is mIoU)."""
    image = resize_to(merged, frame["amodal"].shape[-2:])
    return {"miou": metrics.iou(tasks.amodal_mask(image[None]), frame["amodal"]).item()}


def _square(img, R):
    return F.interpolate(img[None].float(), size=(R, R), mode="bilinear", antialias=True, align_corners=False)[0]


def _square_mask(mask, R):
    return F.interpolate(mask[None, None].float(), size=(R, R), mode="nearest-exact")[0, 0] > 0.5


# task -> (condition images (3, R, R) of a frame, merge of members (M, b, 3, R, R), per-frame score)
TASK_RULES = {
    "depth": (lambda f, R: [_square(f["rgb"], R)], tasks.get("depth").merge, score_depth),
    "flow": (lambda f, R: [_square(f["rgb"], R), _square(f["rgb2"], R)], tasks.get("flow").merge, score_flow),
    "amodal": (lambda f, R: [_square(f["rgb"], R), tasks.mask_image(_square_mask(f["ids"] == 1, R)[None])[0]],
               lambda m, cfg: tasks.get("amodal").merge(m, cfg)["painting"], score_amodal),
}


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def predict(model, cfg, k, cond, device, codec, generator):
    """cond: K condition batches (b, 3, R, R) of the run's task k -> members (M, b, 3, R, R), decoded, on the CPU
    (evaluate.evaluate's chain, for images that are not the run's validation scenes)."""
    M, b = cfg.sample.ensemble, len(cond[0])
    latents = {"cond": [codec.encode(c.to(device)) for c in cond]}
    fn = sampling.conditioned_fn(model, cfg, k, latents, M)
    z0 = sampling.generate(fn, cfg, (M * b, *latents["cond"][0].shape[1:]), generator, device)
    x = codec.decode(z0.float()).float()
    return x.view(M, b, *x.shape[1:]).cpu()


def with_intervals(values):
    """{metric: per-frame values} -> {k: mean, k_ci: [lo, hi]} + n (95 % percentile bootstrap over frames, the
    intervals eval.json gets: tasks.base.intervals)."""
    means = {k: float(np.mean(v)) for k, v in values.items()}
    return {**means, **tasks.base.intervals({k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}),
            "n": len(next(iter(values.values())))}


def evaluate_benchmark(model, cfg, task_index, bench, frames, device, codec):
    """Every frame of `frames` through the model (the run's task `task_index`) at the run's resolution, scored by
    the protocol: the eval dict."""
    conditions, merge, score = TASK_RULES[bench.task]
    R, s = cfg.data.resolution, cfg.sample
    generator = torch.Generator().manual_seed(s.seed)
    values = {}
    for start in range(0, len(frames), s.batch):
        batch = [frames[i] for i in range(start, min(start + s.batch, len(frames)))]
        cond = [torch.stack(images) for images in zip(*(conditions(f, R) for f in batch))]  # K x (b, 3, R, R)
        merged = merge(predict(model, cfg, task_index, cond, device, codec, generator), cfg)
        for frame, m in zip(batch, merged):
            for k, v in score(m, frame, bench).items():
                values.setdefault(k, []).append(v)
    return {"benchmark": bench.name, "task": bench.task, **with_intervals(values), "official_n": bench.frames or None,
            "depth_range": list(bench.depth_range) if bench.task == "depth" else None,
            "align": bench.align if bench.task == "depth" else None, "resolution": R,
            "steps": s.steps, "ensemble": s.ensemble, "schedule": s.schedule or cfg.diffusion.schedule}, values


def run_benchmarks(model, cfg, name, root, out_dir, device, codec):
    """--benchmark NAME --root DIR: every frame list and file checked first, then each benchmark evaluated into
    out_dir/eval_<benchmark>.json (+ eval_<benchmark>_frames.npz, the per-frame values) and benchmarks.md."""
    run_tasks = [task.name for task in tasks.run_tasks(cfg)]
    names = benchmark_names(name, run_tasks)
    opened = [(BENCHMARKS[n], open_frames(BENCHMARKS[n], root)) for n in names]  # bad input fails here, before work
    results = {}
    for bench, frames in opened:
        k = run_tasks.index(bench.task)  # its router entry and label row
        result, values = evaluate_benchmark(model, cfg, k, bench, frames, device, codec)
        (Path(out_dir) / f"eval_{bench.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        np.savez(Path(out_dir) / f"eval_{bench.name}_frames.npz", **{k: np.asarray(v) for k, v in values.items()})
        shown = " | ".join(f"{k} {result[k]:.4f} [{result[k + '_ci'][0]:.4f}, {result[k + '_ci'][1]:.4f}]"
                           for k in values)
        print(f"benchmark {bench.name} | {shown} | n {result['n']}", flush=True)
        results[bench.name] = result
    print(f"table: {write_table(out_dir)}")
    return results


# ----------------------------------------------------------------------------------------------------------
# The paper's tables, generated from eval_<benchmark>.json
# ----------------------------------------------------------------------------------------------------------

def _cell(result, key, factor):
    if result is None:
        return "—"
    lo, hi = (factor * x for x in result[f"{key}_ci"])
    return f"{factor * result[key]:.1f} [{lo:.1f}, {hi:.1f}]" if factor == 100 else \
        f"{result[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def table_markdown(results, task):
    """The paper's table for `task` (Table 3, 4 or 5 layout) with a row for this run: results {benchmark: eval}."""
    benches = [b for b in BENCHMARKS.values() if b.task == task]
    columns = TABLE_COLUMNS[task]
    header = ["Method"] + [f"{b.title} {title}" for b in benches for _, title, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in PAPER_ROWS[task].items():
        cells = [f"{row[b.name][j]:.1f}" if b.name in row and columns[j][2] == 100 else
                 f"{row[b.name][j]:.2f}" if b.name in row else "—" for b in benches for j in range(len(columns))]
        lines.append("| " + " | ".join([method] + cells) + " |")
    ours = [_cell(results.get(b.name), key, factor) for b in benches for key, _, factor in columns]
    lines.append("| " + " | ".join(["this run (95 % interval)"] + ours) + " |")
    counts = [f"{b.title} {results[b.name]['n']}" + (f" of {b.frames}" if b.frames else "") for b in benches
              if b.name in results]
    return "\n".join(lines) + f"\n\nFrames evaluated: {', '.join(counts)}.\n"


def write_table(out_dir):
    """benchmarks.md: one table per task with results among out_dir/eval_<benchmark>.json; its path."""
    paths = {name: Path(out_dir) / f"eval_{name}.json" for name in BENCHMARKS}
    results = {name: json.loads(path.read_text()) for name, path in paths.items() if path.is_file()}
    sections = []
    for task, title in (("depth", "Table 3: depth, Marigold's protocol (AbsRel and δ1 in %)"),
                        ("flow", "Table 4: FlyingChairs validation EPE (pixels, all pixels)"),
                        ("amodal", "Table 5: pix2gestalt held-out mIoU (%)")):
        if any(BENCHMARKS[n].task == task for n in results):
            sections.append(f"## {title}\n\n" + table_markdown(results, task))
    path = Path(out_dir) / "benchmarks.md"
    path.write_text("# The paper's benchmarks\n\nGenerated by `python sample.py RUN --benchmark ...` from "
                    "eval_<benchmark>.json; the papers' rows are their published numbers.\n\n" + "\n".join(sections))
    return path
