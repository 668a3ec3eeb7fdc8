"""Fit compute-scaling laws over runs, and run the sweeps that produce them (the table and the fit of a sweep's
runs: minidp/sweeps.py print_table and fit_and_draw; this script runs the children and resumes them).

    python fit_scaling.py fit runs/sweeps/model_size [--x train|inference] [--y loss|eval.absrel|...] [--out DIR]
    python fit_scaling.py sweep configs/sweeps/model_size_pretrain.yaml        # or under torchrun: DDP runs
    python fit_scaling.py sweep configs/sweeps/moe_equal_active.yaml --results sweep_moe_equal_active

fit: every run directory given (or every sub-directory of a folder given) becomes points (x = compute in
MACs, y = a loss or an error); minidp.scaling.fit_power_law fits L = a * C^b to their envelope (the lower hull
from the least compute to the lowest loss; the scaling paper's supplementary §1); the fit goes to
DIR/scaling_<y>.json and a log-log figure to DIR/scaling_<y>.png (every run, the envelope, the law with its
formula in the legend). A directory of seed<k> runs is one variant: its points are the mean over its seeds.
- x = train: cumulative training MACs from log.jsonl (3 x forward MACs x samples seen), plus the MACs of the
  run it was initialised from when a sweep recorded one (sweep.json: parent_macs).
- x = inference: DDIM steps x ensemble members x forward MACs per image, for test-time studies.
- y = loss: each run's whole training-loss curve, smoothed (scaling.smooth_log says which and why);
  y = eval.<key>: one point per run from eval.json; eval.<k>_err is 1 - <k> (delta1_err = 1 - delta1).
A run without the needed log, MACs or metric is named in a warning and skipped.

sweep: a sweep file (configs/sweeps/*.yaml) lists variants of a base config. kind: train trains each variant
with train.py into <out>/<variant> (a normal, resumable run directory; one with eval.json is finished and
skipped; a variant with `continues: <v>` starts as a copy of v's run and resumes it to its own train.steps);
kind: test_time trains one run <out>/base, then evaluates it once per variant with sample.py. With
`seeds: k` every run is made k times, as <out>/<variant>/seed<j> with train.seed=j (test_time: one base run per
seed, <out>/base/seed<j>, each evaluated once per variant). Then it prints the sweep's table (per variant and y:
the mean +- the 95 % t-interval over seeds, and the verdict of variant - baseline, the file's `baseline:` or its
first variant, or the variant's own `against:`, minidp.stats' rule), and fits and draws each y of the file's fit
section into <out> through the per-variant means. `--results STUDY` then writes that table's rows (with the
paired differences) to tutorials/results/STUDY.json, from which `python -m minidp.tables` renders the tables.

Notable choices:
- Each run is a child process (`python train.py ...`). Under torchrun every rank of this script starts its
  own child with the same environment, so the children form the DDP group; nothing here joins it.
- A sweep killed half-way is started again with the same command: finished runs are skipped, the one it was in
  resumes from its checkpoint (its train.py got SIGTERM when the sweep died, so it saved one and stopped). A second
  sweep on the same out folder is refused in one line (a flock, dropped by the kernel when the first one ends).
- The sweep file is read by config.read_mapping (yaml.safe_load); every variant's config is checked through
  config.py before anything runs.
- The verdict over seeds pairs seed j of a variant with seed j of the baseline (both trained with train.seed=j:
  the same initial-weight draw where the shapes agree, the same batch plan) and takes the t-interval of the
  k differences. With one seed there is no interval and the column says "1 seed", not a verdict; for that
  case `python sample.py compare A B` gives the paired interval over scenes.
- The verdict compares final values (the last smoothed loss, the evaluation), what the table shows; a figure
  that compares runs at equal compute (MoE against dense) is read from the figure, not from this column.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from minidp import config as cfglib
from minidp import files, scaling, tables
from minidp.sweeps import (checkout_commit, find_runs, fit_and_draw, included, mark_trained, print_table,
                           read_sweep, reference_of, results_study, seed_dirs, write_study)
from minidp.errors import ArgumentParser, FaultError, InputError, one_line

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------------------
# Sweeps


def die_with_parent():
    """preexec_fn of a sweep's child: Linux sends it SIGTERM when the sweep dies, however it dies (SIGKILL, the OOM
    killer), so train.py saves a checkpoint and stops instead of training on as an orphan that holds its run's
    lock against the sweep started again. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def lock_sweep(spec):
    """The sweep's lock on its out folder (rank 0 takes it; keep the handle while the sweep runs): a second sweep
    on the same folder stops here, in one line, before it starts any run."""
    if int(os.environ.get("RANK", 0)) != 0:
        return None
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    return files.lock_folder(spec["out"], "fit_scaling.py sweep")


def run_child(argv, what):
    rc = subprocess.run([sys.executable, *argv], preexec_fn=die_with_parent).returncode
    if rc != 0:
        raise RuntimeError(f"{what} failed with exit status {rc}")


def continued_from(source, run):
    """Copy a finished run's checkpoint and log into `run`, which train.py then resumes (sweep key `continues`).
    Every rank copies (to a temporary name, then an atomic rename), so no rank's train.py can see half a file."""
    if not (source / "ckpt.pt").is_file():
        raise InputError(f"{run.name}: continues {source}, which has no ckpt.pt (trained and then removed?)")
    run.mkdir(parents=True, exist_ok=True)
    for name in ("ckpt.pt", "log.jsonl"):
        tmp = run / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(source / name, tmp)
        os.replace(tmp, run / name)


def run_sweep(spec):
    out, master = Path(spec["out"]), int(os.environ.get("RANK", 0)) == 0
    commit = checkout_commit()  # the code the children run: each finished run records it (trained_at.txt)

    def finished(run):
        if master:
            mark_trained(run, commit)
    train_py, sample_py = str(HERE / "train.py"), str(HERE / "sample.py")
    seeds = spec["seeds"]
    bases, fwd = seed_dirs(out, "base", seeds), {}
    if spec["kind"] == "test_time":  # one trained model per seed, evaluated once per variant
        for base, seed in bases:
            if not (base / "eval.json").is_file():
                run_child([train_py, spec["config"], *spec["common"], *seed, f"train.out_dir={base}"],
                          f"training the base run {base}")
                finished(base)
            fwd[base] = scaling.forward_macs_from_log(scaling.run_log(base),
                                                      cfglib.load_config(base / "config.yaml").train.global_batch)
    for name, v in spec["variants"].items():
        for k, (run, seed) in enumerate(seed_dirs(out, name, seeds)):
            label = name if seeds == 1 else f"{name}/seed{k}"
            if (run / "eval.json").is_file():
                print(f"sweep | {label}: finished, skipped", flush=True)
                continue
            print(f"sweep | {label}", flush=True)
            if spec["kind"] == "test_time":
                base = bases[k][0]
                if master:  # evaluation is one process
                    run_child([sample_py, str(base), *v.get("overrides", []), "--out", str(run)], f"variant {label}")
                    finished(run)
                    (run / "sweep.json").write_text(json.dumps({"source": str(base), "forward_macs": fwd[base]}) + "\n")
                continue
            if v.get("continues") and not (run / "ckpt.pt").is_file():  # not yet started: start from that run
                continued_from(seed_dirs(out, v["continues"], seeds)[k][0], run)
            parent = v.get("parent")
            parent_run = seed_dirs(out, parent, seeds)[k][0] if parent else None
            extra = [f"train.{v.get('parent_key', 'init_from')}={parent_run / 'ckpt.pt'}"] if parent else []
            run_child([train_py, spec["config"], *spec["common"], *v.get("overrides", []), *seed, *extra,
                       f"train.out_dir={run}"], f"variant {label}")
            finished(run)
            if master and parent:
                record = {"parent": parent, "parent_macs": scaling.final_macs(parent_run)}
                (run / "sweep.json").write_text(json.dumps(record) + "\n")
    if not master:
        return
    groups = {n: [run for run, _ in seed_dirs(out, n, seeds)] for n in included(spec)}
    against = {n: reference_of(spec, n) for n in groups}
    print_table(groups, spec["fit"]["x"], spec["fit"]["y"], against=against)
    for y in spec["fit"]["y"]:
        try:
            fit_and_draw(groups, spec["fit"]["x"], y, out)
        except InputError as e:  # e.g. variants of equal compute (schedules): the table above is the result
            files.warning(f"no law for {y}: {e}")


def write_results(spec, sweep_file, study):
    """tutorials/results/<study>.json from the finished sweep: the rows of its table (sweeps.results_study),
    described by the sweep file's first comment line; each row's commit is what its runs were trained at (their
    trained_at.txt), this checkout's for runs from before the sweep recorded it."""
    header = next((line.lstrip("# ").strip() for line in Path(sweep_file).read_text().splitlines()
                   if line.startswith("#")), "")
    command = f"python fit_scaling.py sweep {sweep_file} --results {study}"
    result = results_study(spec, study, header.split(":")[0], command, checkout_commit())
    path = tables.RESULTS / f"{study}.json"
    write_study(path, result)
    print(f"sweep | results -> {path} (python -m minidp.tables renders its tables)", flush=True)


# ----------------------------------------------------------------------------------------------------------
# Entry point


def main(argv=None):
    p = ArgumentParser(description="Fit compute-scaling laws (see the module docstring).")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a law over finished runs")
    f.add_argument("paths", nargs="+", help="run directories, or folders of run directories")
    f.add_argument("--x", default="train", choices=("train", "inference"))
    f.add_argument("--y", default="loss", help="loss, or eval.<key> (eval.absrel, eval.delta1_err, ...)")
    f.add_argument("--out", help="where scaling_<y>.json/.png go (default: the folder given, or .)")
    f.add_argument("--smooth", type=int, default=5, help="centred smoothing window of the loss, in log records")
    f.add_argument("--n-max", type=int, default=1, help="stop when fewer points than this lie below the fit")
    f.add_argument("--max-iter", type=int, default=20, help="the most fits")
    s = sub.add_parser("sweep", help="run a sweep file's variants, then fit and draw")
    s.add_argument("sweep", help="a sweep file, e.g. configs/sweeps/ddim_steps.yaml")
    s.add_argument("--results", metavar="STUDY", help="then write tutorials/results/STUDY.json (minidp/tables.py: "
                                                      "the tables generated from it) from the sweep's runs")
    args = p.parse_args(argv)
    try:
        if args.command == "fit":
            if args.y != "loss" and not args.y.startswith("eval."):
                raise InputError(f"--y must be loss or eval.<key>, got {args.y!r}")
            if args.smooth < 1 or args.smooth % 2 == 0 or args.n_max < 1 or args.max_iter < 1:
                raise InputError("--smooth must be a positive odd number; --n-max and --max-iter at least 1")
            out = Path(args.out) if args.out else (Path(args.paths[0]) if len(args.paths) == 1 else Path("."))
            fit_and_draw(find_runs(args.paths), args.x, args.y, out, args.smooth, args.n_max, args.max_iter)
        else:
            spec = read_sweep(args.sweep)
            lock = lock_sweep(spec)
            try:
                run_sweep(spec)
                if args.results and int(os.environ.get("RANK", 0)) == 0:
                    write_results(spec, args.sweep, args.results)
            finally:  # explicitly: a frame kept alive by a reference cycle would hold it past the sweep
                if lock:
                    lock.close()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FaultError as e:  # a results file the OS refused to write half-way
        print(f"error: {e}", file=sys.stderr)
        return 3
    except OSError as e:  # a folder or file the OS refused (permissions, a file where a folder should be)
        print(f"error: {e.filename or 'a file'}: {e.strerror or one_line(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as e:  # a child run failed, or a run it wrote cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
