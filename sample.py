"""Sample from a trained run and evaluate it: DDIM, test-time ensembling, metrics, figures.

    python sample.py runs/depth [sample.steps=200 sample.ensemble=5 sample.schedule=cosine ...]
    python sample.py runs/referring sample.text_guidance=5.0 --out runs/referring/guidance5
    python sample.py runs/referring --expression "the left red sphere" --scene 3
    python sample.py runs/referring sample.correctional=auto          # ADDP's correctional guidance (Eqn. 5)
    python sample.py runs/referring sample.steps=10 sample.intermediates=true data.val_size=128 sample.num_images=128
        # + intermediates.json, every scene's metric at every DDIM step: python -m minidp.ct_estimation reads it
    python sample.py runs/generalist [sample.task=flow]     # every task of a generalist, or one
    python sample.py compare runs/depth runs/depth_pretrained [--metric absrel]   # paired, scene by scene
    python sample.py runs/hypersim_depth --benchmark nyuv2 --root data/benchmarks   # a paper benchmark (or all)

Loads `runs/<name>/ckpt.pt` (EMA weights) and the config stored inside it, applies the overrides, and writes
`eval.json` and `figures/*.png` into the run directory (or `--out`); a generalist's eval.json has one section
per task (figures/generalist.png: one row per task). `--benchmark NAME --root DIR` evaluates on one of the papers'
benchmarks instead (minidp/protocol.py: Marigold's depth protocol, FlyingChairs, pix2gestalt) and writes
eval_<benchmark>.json and benchmarks.md. The evaluation itself is
minidp/evaluate.py, the same function train.py runs at the end of training, so the numbers a run reports are
the numbers this script reproduces. What each task measures, its baseline and its figure: see that module.

Overrides: `sample.*`, and the data keys that choose the validation set; anything else (train.steps, the model)
is refused, because it would be accepted and silently mean nothing. Bad input (a missing or corrupt checkpoint,
an override that does not exist, has the wrong type or is out of range, a task the checkpoint was not trained
on, a benchmark folder, frame list or frame that is missing or not in the benchmark's layout) is one line on stderr
and exit status 2.
"""

import sys
from pathlib import Path

from minidp import checkpoint as ckptlib
from minidp import config as cfglib
from minidp import data, evaluate, protocol, tasks
from minidp.compare import compare_main
from minidp.errors import ArgumentParser, FaultError, InputError, choose_device, one_line

# What may change at test time: the whole sample section, and the data keys that choose the validation set.
# Everything else (the model, the training recipe) is what the checkpoint was trained with.
TEST_TIME_KEYS = ("sample.*", "data.task", "data.val_size", "data.val_offset", "train.device")


def check_test_time(overrides):
    """ConfigError naming the first override that would not mean anything at test time."""
    for text in overrides:
        section, key, _ = cfglib.parse_override(text)
        if section != "sample" and f"{section}.{key}" not in TEST_TIME_KEYS:
            raise cfglib.ConfigError(f"override '{text}': sample.py accepts only {', '.join(TEST_TIME_KEYS)} "
                                     f"(the rest is fixed by the checkpoint)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:  # python sample.py compare RUN_A RUN_B [--metric k]: minidp/compare.py
        return compare_main(argv[1:])
    p = ArgumentParser(description="Sample from and evaluate a minidp run (see the module docstring).")
    p.add_argument("run", help="a run directory (holding ckpt.pt) or a checkpoint file")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. sample.steps=200 sample.ensemble=5")
    p.add_argument("--out", help="where eval.json and figures/ go (default: the run directory)")
    p.add_argument("--expression", help="referring runs: segment this expression instead, e.g. 'the red sphere'")
    p.add_argument("--scene", type=int, default=0, help="with --expression: which validation scene (default 0)")
    p.add_argument("--benchmark", choices=["all", *protocol.BENCHMARKS],
                   help="evaluate on a paper benchmark instead of the validation scenes (needs --root)")
    p.add_argument("--root", help="with --benchmark: the folder holding the benchmarks (tutorial 10)")
    args = p.parse_args(argv)
    if (args.benchmark is None) != (args.root is None):
        p.error("--benchmark and --root go together")
    try:
        ckpt_path = ckptlib.resolve(args.run)
        ckpt = ckptlib.load_checkpoint(ckpt_path, "sample.py")
        cfg = cfglib.config_from_dict(ckpt.get("config", {}), source=str(ckpt_path))
        check_test_time(args.overrides)
        cfglib.validate(cfglib.apply_overrides(cfg, args.overrides))
        # a generalist evaluates every task it knows (or sample.task); a single-task run its data.task
        multitask = cfg.train.mode == "multitask"
        ckptlib.checkpoint_tasks(ckpt, ckpt_path, cfg.sample.task or (None if multitask else cfg.data.task))
        model = ckptlib.model_from_checkpoint(ckpt, ckpt_path, weights="ema")
        device = choose_device(cfg.train.device)
        codec = data.make_codec(cfg.data, device)  # the codec the checkpoint's config names (a VAE file is read)
        if args.expression is not None:  # a referring run, or a generalist that knows referring segmentation
            names = [task.name for task in tasks.run_tasks(cfg)]
            if not any(task.text for task in tasks.run_tasks(cfg)) or not 0 <= args.scene < cfg.data.val_size:
                raise InputError(f"--expression needs a referring run and 0 <= --scene < data.val_size = "
                                 f"{cfg.data.val_size} (this run: task(s) {', '.join(names)}, scene {args.scene})")
            tasks.tokenize([args.expression])  # an unknown word is an error before any work
    except (cfglib.ConfigError, InputError, ValueError) as e:  # data.DataError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else ckpt_path.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # --out under a file, or in a directory this user cannot write
        print(f"error: --out: cannot write to {out} ({e.strerror or one_line(e)})", file=sys.stderr)
        return 2
    model = model.to(device).eval()
    if args.expression is not None:
        path = evaluate.figures_dir(out) / f"expression_scene{args.scene}.png"
        mask = evaluate.paint_expression(model, cfg, device, args.scene, args.expression, path, codec)
        print(f"{args.expression!r} on validation scene {args.scene}: {int(mask.sum())} pixels; figure {path}")
        return 0
    try:
        if args.benchmark is not None:
            protocol.run_benchmarks(model, cfg, args.benchmark, args.root, out, device, codec)
        else:
            evaluate.evaluate(model, cfg, out, device, codec=codec)
    except (*data.DataError, InputError) as e:  # a validation file that cannot be read, a benchmark's bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FaultError as e:  # eval.json could not be written (a full disk): exit status 3
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
