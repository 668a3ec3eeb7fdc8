"""Sample from a trained run and evaluate it: DDIM, test-time ensembling, metrics, figures.

    python sample.py runs/depth [sample.steps=200 sample.ensemble=5 sample.schedule=cosine ...]
    python sample.py runs/referring sample.text_guidance=5.0 --out runs/referring/guidance5

Loads `runs/<name>/ckpt.pt` (EMA weights) and the config stored inside it, applies the overrides, and writes
`eval.json` and `figures/*.png` into the run directory (or `--out`). The evaluation itself is
minidp/evaluate.py, the same function train.py runs at the end of training, so the numbers a run reports are
the numbers this script reproduces. What each task measures, its baseline and its figure: see that module.

Bad input (a missing or corrupt checkpoint, an override that does not exist or has the wrong type, a task the
checkpoint was not trained on) is one line on stderr and exit status 2.
"""

import argparse
import sys
from pathlib import Path

from minidp import checkpoint as ckptlib
from minidp import config as cfglib
from minidp import evaluate


def main(argv=None):
    p = argparse.ArgumentParser(description="Sample from and evaluate a minidp run (see the module docstring).")
    p.add_argument("run", help="a run directory (holding ckpt.pt) or a checkpoint file")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. sample.steps=200 sample.ensemble=5")
    p.add_argument("--out", help="where eval.json and figures/ go (default: the run directory)")
    args = p.parse_args(argv)
    try:
        ckpt_path = ckptlib.resolve(args.run)
        ckpt = ckptlib.load_checkpoint(ckpt_path, "sample.py")
        cfg = cfglib.config_from_dict(ckpt.get("config", {}), source=str(ckpt_path))
        cfglib.apply_overrides(cfg, args.overrides)
        ckptlib.checkpoint_tasks(ckpt, ckpt_path, cfg.data.task)
        model = ckptlib.model_from_checkpoint(ckpt, ckpt_path, weights="ema")
        device = ckptlib.choose_device(cfg.train.device, 0)
    except (cfglib.ConfigError, ckptlib.InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else ckpt_path.parent
    out.mkdir(parents=True, exist_ok=True)
    evaluate.evaluate(model.to(device), cfg, out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
