"""The training loop's overhead: train.py's samples/s against the bare model step, same model, batch and data.

train.py's step is more than the model's forward + backward + AdamW: the batch plan (scene ids, timesteps,
noise), the batch itself (an index into the rendered cache, depth encoding), forward noising, gradient
clipping, the EMA update, the rank agreement on loss and stop, the log. On a tiny model all of that is
host work the model step waits on. This benchmark runs train.py itself (a subprocess, exactly as a user
does) on a config, then times the bare step on the same model at the same batch on one fixed batch of the
same data, and prints the ratio of the two rates.

    bare step = forward, masked MSE, backward, AdamW step (train.py's optimizer: parallel.make_optimizer)
    loop      = train.py's samples/s, from its log records after the first (which pays for warm-up)

Run: python benchmarks/bench_train.py [config.yaml] [section.key=value ...]    (default: configs/depth.yaml,
     the depth quickstart's model and batch; about a minute on 2 CPU cores)
Headline (last): train_loop_over_step: R   (loop samples/s / bare-step samples/s; 1.0 = no overhead)
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from minidp import checkpoint, config, data, dit, errors, parallel, recipe, schedules, tasks, vae  # noqa: E402

STEPS, WINDOWS = 150, 3  # train.py logs every 50 steps; the first window (warm-up) is dropped


def loop_samples_per_s(cfg_path, overrides, out_dir):
    """train.py's own samples/s over its log windows after the first."""
    cmd = [sys.executable, str(ROOT / "train.py"), str(cfg_path), *overrides, f"train.out_dir={out_dir}",
           f"train.steps={STEPS}", f"train.log_every={STEPS // WINDOWS}", f"train.ckpt_every={STEPS}",
           "train.init_optional=true", "train.init_from=", "sample.num_images=2", "sample.batch=2",
           "sample.ensemble=1", "sample.steps=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: train.py failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}")
    records = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records[1:]]
    return sum(rates) / len(rates), proc.stdout


def bare_samples_per_s(cfg, steps, warmup=3):
    """Forward + loss + backward + AdamW of train.py's model on one fixed batch of the same data, samples/s."""
    tc, dc = cfg.train, cfg.data
    device = errors.choose_device(tc.device)
    codec = vae.make_codec("pixel")
    torch.manual_seed(tc.seed)
    model = checkpoint.initial_model(cfg, codec)[0].to(device).train()
    opt = parallel.make_optimizer(model, tc.lr, tc.weight_decay, device)
    d = cfg.diffusion
    schedule = schedules.NoiseSchedule.from_config(d).to(device)
    latent = (model.in_channels, model.input_size, model.input_size)
    plan = parallel.to_device(recipe.batch_plan(cfg, 0, latent, class_dropout=False, text=False), device)
    cache = data.render_cache(dc, min(dc.train_size, tc.global_batch * 4))
    batch = data.make_batch(dc, plan["indices"] % len(cache["rgb"]), device, cache=parallel.to_device(cache, device))
    x0, eps, t = codec.encode(batch["target"]), plan["noise"], plan["t"]
    x_in = torch.cat([codec.encode(c) for c in batch["cond"]] + [schedule.q_sample(x0, t, eps)], dim=1)
    y = torch.full_like(batch["label"], dit.task_label(model, 0))
    task, target = torch.zeros_like(y), schedule.target(x0, eps, t, cfg.diffusion.prediction)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            pred = model(x_in, t, y, task=task, force_drop_ids=plan["drop_label"])[:, : x0.shape[1]].float()
        loss = recipe.masked_loss(pred, target, batch["mask"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tc.global_batch * steps / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description="train.py's loop against the bare model step (see the docstring).")
    p.add_argument("config", nargs="?", default=str(ROOT / "configs" / "depth.yaml"))
    p.add_argument("overrides", nargs="*", help="section.key=value for train.py and the bare step alike")
    args = p.parse_args(argv)
    try:
        cfg = config.load_config(args.config, [*args.overrides, "train.init_from="])
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task = tasks.get(cfg.data.task)
    if task.pretraining or not task.cacheable(cfg.data.dataset) or cfg.train.micro_batch:
        print("error: bench_train.py times a fine-tuning config with image conditions and no accumulation "
              "(depth, flow)", file=sys.stderr)
        return 2
    print(f"device: {errors.choose_device(cfg.train.device)}, threads: {torch.get_num_threads()}, "
          f"torch {torch.__version__} | {cfg.model.preset} at {cfg.data.resolution} px, batch {cfg.train.global_batch}")
    # The bare step before and after train.py, the better one kept: on a shared machine the load changes
    # during the run, and the better reference makes the ratio err low, not high.
    bare_before = bare_samples_per_s(cfg, STEPS // WINDOWS)
    with tempfile.TemporaryDirectory() as tmp:
        loop, stdout = loop_samples_per_s(args.config, args.overrides, Path(tmp) / "run")
    bare_after = bare_samples_per_s(cfg, STEPS // WINDOWS)
    bare = max(bare_before, bare_after)
    print(stdout.strip().splitlines()[1])  # train.py's model line
    print(f"bare step: {bare_before:.1f} samples/s before train.py, {bare_after:.1f} after")
    print(f"train.py loop: {loop:.1f} samples/s (log windows 2..{WINDOWS} of {STEPS // WINDOWS} steps)")
    print(f"train_loop_over_step: {loop / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
