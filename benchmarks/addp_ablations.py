"""ADDP's ablations on the synthetic world (issue 11): its Table 5 on referring segmentation, its Table F on depth,
the per-step metric curve (its Fig. 1a) and correctional guidance, each training run with 2 seeds.

    OMP_NUM_THREADS=1 python benchmarks/addp_ablations.py            # train what is missing, then report
    python benchmarks/addp_ablations.py --report                     # only the tables and figures of finished runs
    python benchmarks/addp_ablations.py --only ris --seeds 0         # a subset

What it runs, one process at a time (configs/addp/*.yaml say why each setting):
    Table 5 (referring, oIoU / mIoU)   ris_uniform, ris_loss_diffusion, ris_prob_diffusion, ris_prob_perception
    Table F (depth, AbsRel / delta1)    depth_uniform, depth_sampling, depth_sampling_augment
    python train.py configs/addp/<row>.yaml train.seed=<s> train.out_dir=runs/addp/<row>_s<s>
The perception row needs the c_t^2 that Algorithm A estimates from the uniform baseline (seed 0):
    python -m minidp.ct_estimation runs/addp/ris_uniform_s0/intermediates.json -o runs/addp/ris_perception_weights.json
and, once the rows are trained, correctional guidance on the last referring row (seed 0 and 1):
    python sample.py runs/addp/ris_prob_perception_s<s> sample.correctional=auto sample.intermediates=false
        --out runs/addp/ris_prob_perception_s<s>/correctional
Seeds vary train.seed: the initial weights, the scenes of every batch, t, the noise and the drops; the world
(data.seed) and the validation scenes stay fixed so that rows are compared on the same 128 scenes. A finished
run (its eval.json exists) is not trained again. Tables: the mean over seeds, +- half the range (2 seeds), and
each seed's value. Figures: runs/addp/step_metric_ris.png and step_metric_depth.png (Fig. 1a, seed 0).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from minidp import evaluate  # noqa: E402

RUNS = ROOT / "runs" / "addp"
WEIGHTS = RUNS / "ris_perception_weights.json"
TABLES = {
    "ris": ("Table 5: referring segmentation, c_t^2 usage", ("oiou", "miou"), [
        ("ris_uniform", "uniform t"),
        ("ris_loss_diffusion", "loss scaling, diffusion c_t"),
        ("ris_prob_diffusion", "prob. scaling, diffusion c_t"),
        ("ris_prob_perception", "prob. scaling, perception c_t (minidp's Algorithm A)"),
    ]),
    "depth": ("Table F: depth", ("absrel", "delta1"), [
        ("depth_uniform", "baseline (uniform t)"),
        ("depth_sampling", "+ timestep sampling (depth_release)"),
        ("depth_sampling_augment", "+ sampling + augmentation"),
    ]),
}


def run(cmd):
    """Run a command from the repository root with one intra-op thread unless the caller set it; its status."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    status = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"  ({time.time() - start:.0f} s, exit {status})", flush=True)
    return status


def train(row, seed):
    out = RUNS / f"{row}_s{seed}"
    if (out / "eval.json").is_file():
        return True
    return run([sys.executable, "train.py", f"configs/addp/{row}.yaml", f"train.seed={seed}",
                f"train.out_dir={out.relative_to(ROOT)}"]) == 0


def estimate_weights():
    if not WEIGHTS.is_file():
        run([sys.executable, "-m", "minidp.ct_estimation", str(RUNS / "ris_uniform_s0" / "intermediates.json"),
             "-o", str(WEIGHTS)])
    return WEIGHTS.is_file()


def correctional(seed):
    out = RUNS / f"ris_prob_perception_s{seed}" / "correctional"
    if not (out / "eval.json").is_file() and (out.parent / "ckpt.pt").is_file():
        run([sys.executable, "sample.py", str(out.parent), "sample.correctional=auto", "sample.intermediates=false",
             "--out", str(out)])


def read(path):
    return json.loads(path.read_text()) if path.is_file() else None


def summary(values):
    """'mean +- half range (v0, v1)' over the seeds that finished."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    spread = (max(values) - min(values)) / 2
    return f"{mean:.3f} +- {spread:.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def report(seeds):
    lines = []
    for table, (title, keys, rows) in TABLES.items():
        lines += ["", f"{title} ({len(seeds)} seeds: mean +- half range (per seed))",
                  "| row | " + " | ".join(keys) + " | training s/run |", "|---|" + "---|" * (len(keys) + 1)]
        for row, label in rows:
            evals = [e for s in seeds if (e := read(RUNS / f"{row}_s{s}" / "eval.json"))]
            logs = [RUNS / f"{row}_s{s}" / "log.jsonl" for s in seeds]
            times = [json.loads(p.read_text().splitlines()[-1])["time"] for p in logs if p.is_file()]
            lines.append(f"| {label} | " + " | ".join(summary([e[k] for e in evals]) for k in keys) +
                         f" | {sum(times) / len(times):.0f} |" if times else f"| {label} | - |")
    evals = [(s, e) for s in seeds if (e := read(RUNS / f"ris_prob_perception_s{s}" / "correctional" / "eval.json"))]
    if evals:
        lines += ["", "Correctional guidance (auto, k = 3, w_I 1.5, w_D- 2.0, w_D 3.0) on ris_prob_perception",
                  "| | oIoU | mIoU |", "|---|---|---|",
                  f"| two-scale guidance | {summary([e['plain_oiou'] for _, e in evals])} | "
                  f"{summary([e['plain_miou'] for _, e in evals])} |",
                  f"| + correctional=auto | {summary([e['oiou'] for _, e in evals])} | "
                  f"{summary([e['miou'] for _, e in evals])} |"]
    weights = read(WEIGHTS)
    if weights:
        lines += ["", "perception c_t^2 (t = 0 group first): " + " ".join(f"{w:.3f}" for w in weights["weights"])]
    print("\n".join(lines))
    for task, rows in (("ris", ("ris_uniform", "ris_prob_perception")), ("depth", ("depth_uniform",
                                                                                   "depth_sampling_augment"))):
        files = {row: RUNS / f"{row}_s0" / "intermediates.json" for row in rows}
        if all(f.is_file() for f in files.values()):
            evaluate.plot_step_metrics(files, RUNS / f"step_metric_{task}.png")
            print(f"figure: {RUNS / f'step_metric_{task}.png'}")


def main(argv=None):
    p = argparse.ArgumentParser(description="ADDP's ablations on the synthetic world (see the module docstring).")
    p.add_argument("--report", action="store_true", help="train nothing; print the tables of finished runs")
    p.add_argument("--only", choices=tuple(TABLES), help="one table only")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    # seed-major, so that a run cut short still has every row of one seed
    for seed in [] if args.report else args.seeds:
        for table in [args.only] if args.only else list(TABLES):
            for row, _ in TABLES[table][2]:
                if row == "ris_prob_perception" and not estimate_weights():
                    print(f"no perception weights (ris_uniform_s0 did not finish): skipping {row}")
                    continue
                train(row, seed)
            if table == "ris":
                correctional(seed)
    report(args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
