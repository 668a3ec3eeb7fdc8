"""The training loop's overhead: train.py's samples/s against the bare model step, same model, batch and data.

train.py's step is more than the model's forward + backward + AdamW: the batch plan (scene ids, timesteps,
noise), the batch itself (an index into the rendered cache, depth encoding), forward noising, gradient
clipping, the EMA update, the rank agreement on loss and stop, the log. On a tiny model all of that is
host work the model step waits on. This benchmark runs train.py itself (a subprocess, exactly as a user
does) on a config, then times the bare step on the same model at the same batch on one fixed batch of the
same data, and prints the ratio of the two rates.

    bare step = forward, masked MSE, backward, AdamW step (train.py's optimizer: parallel.make_optimizer)
    loop      = train.py's samples/s, from its log records after the first (which pays for warm-up)

Then it profiles train.py's step (torch.profiler, the same functions train.py calls, each phase in a named range)
and prints where the time goes: per phase (plan, batch, forward, loss, backward, clip, optimizer, EMA) and per kind
of operator (matmuls, attention, LayerNorm / GELU / SiLU, elementwise, the optimizer's foreach kernels, copies and
indexing). Against it stands a matmul-only roofline measured in the same run: only the step's matrix products (every
Linear and the patch-embedding conv as a matmul: forward, and the two products of its backward; attention's
q k^T and its product with v, forward and backward), at the same shapes, back to back. Their ratio says how far the
whole step is from the products it cannot avoid.

With --against DIR (another checkout, e.g. a worktree of an older commit), train.py of both checkouts runs in turn,
A B A B, and the per-step speedup is the ratio of their samples/s, each the better of its two runs: one run, the
same machine and load, as the project's speed figures must be.

Run: python benchmarks/bench_train.py [config.yaml] [section.key=value ...] [--against DIR]
     (default: configs/depth.yaml, the depth quickstart's model and batch; two to three minutes on 2 CPU cores)
Headline (last): train_loop_over_step: R   (loop samples/s / bare-step samples/s; 1.0 = no overhead)
        with --against: step_speedup_over_DIR: S   (this checkout's samples/s / DIR's)
"""

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from minidp import checkpoint, config, data, dit, errors, parallel, recipe, schedules, tasks, vae  # noqa: E402

STEPS, WINDOWS = 150, 3  # train.py logs every 50 steps; the first window (warm-up) is dropped


def loop_samples_per_s(cfg_path, overrides, out_dir, code=ROOT):
    """train.py's own samples/s over its log windows after the first (train.py of the checkout `code`)."""
    cmd = [sys.executable, str(Path(code) / "train.py"), str(cfg_path), *overrides, f"train.out_dir={out_dir}",
           f"train.steps={STEPS}", f"train.log_every={STEPS // WINDOWS}", f"train.ckpt_every={STEPS}",
           "train.init_optional=true", "train.init_from=", "sample.num_images=2", "sample.batch=2",
           "sample.ensemble=1", "sample.steps=1"]
    proc = subprocess.run(cmd, cwd=code, capture_output=True, text=True)
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


# ----------------------------------------------------------------------------------------------------------
# Where the step's time goes: torch.profiler over train.py's step, and the matmul-only roofline
# ----------------------------------------------------------------------------------------------------------

PHASES = ("plan", "batch", "forward", "loss", "backward", "clip", "optimizer", "ema")
# Kinds of operator by name, first match wins; self CPU time is summed per kind.
KINDS = (
    ("matmul (Linear, conv)", ("addmm", "aten::mm", "aten::bmm", "convolution", "mkldnn")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "softmax")),
    ("LayerNorm / GELU / SiLU", ("layer_norm", "gelu", "silu")),
    ("optimizer and EMA (foreach)", ("_foreach", "lerp", "addcdiv", "addcmul", "_fused_adam")),
    ("copies, views, indexing", ("copy", "clone", "cat", "index", "gather", "scatter", "contiguous", "to_copy",
                                 "permute", "transpose", "reshape", "view", "expand", "select", "slice", "split",
                                 "chunk", "unsqueeze", "stack", "empty", "zeros", "fill", "as_strided")),
    ("elementwise and reductions", ("add", "mul", "sub", "div", "pow", "sqrt", "mean", "sum", "norm", "abs",
                                    "where", "neg", "exp", "clamp", "rsub", "masked", "eq", "lt", "ge", "rand")),
)


def kind_of(op):
    return next((kind for kind, words in KINDS if any(w in op for w in words)), "other")


def training_state(cfg):
    """What train.py builds before its loop, on one process: model, EMA, optimizer, schedule, tasks, codec, cache."""
    tc = cfg.train
    device = errors.choose_device(tc.device)
    codec = vae.make_codec("pixel")
    torch.manual_seed(tc.seed)
    model = checkpoint.initial_model(cfg, codec)[0].to(device).train()
    state = dict(model=model, ema=copy.deepcopy(model).requires_grad_(False), device=device, codec=codec,
                 opt=parallel.make_optimizer(model, tc.lr, tc.weight_decay, device), run=tasks.run_tasks(cfg),
                 schedule=schedules.NoiseSchedule.from_config(cfg.diffusion).to(device),
                 l1_of_task=recipe.loss_kinds(cfg).to(device),
                 latent=(model.in_channels, model.input_size, model.input_size))
    state["cache"] = data.training_source(cfg, 0, 0, 1, tc.global_batch, device)[0]
    return state


def train_step(cfg, s, step):
    """One step of train.py's loop body (one process, no accumulation), each phase in a profiler range."""
    tc, model, rows = cfg.train, s["model"], slice(0, cfg.train.global_batch)
    with record_function("plan"):
        plan = recipe.batch_plan(cfg, step, s["latent"], class_dropout=tc.mode == "pretrain", text=False)
    with record_function("batch"):
        pixels = data.training_batch(cfg, s["run"], plan, rows, s["device"], s["cache"])
        batch = data.to_latents(pixels, s["codec"])
        t = plan["t"]
        x_t = recipe.model_input(cfg, s["schedule"], recipe.noised_target(cfg, s["run"][0], pixels, batch, s["codec"], t,
                                                                          plan["augment_u"]), plan, rows)
        cond, y, k, text_in = tasks.model_inputs(model, batch, plan.get("task"), plan["drop_image"], plan["drop_text"])
        x_in = torch.cat(cond + [x_t], dim=1)
    with record_function("forward"):
        out = model(x_in, t, y, task=k, force_drop_ids=plan["drop_label"], **text_in)
    with record_function("loss"):
        if tc.objective == "e2e":  # the task's own loss after decoding, as train.py
            loss = recipe.e2e_loss(cfg, s["run"][0], out, x_t, t, pixels, s["schedule"], s["codec"], tc.loss)
        else:
            loss = recipe.loss(cfg, out, batch, s["schedule"], plan, rows, s["l1_of_task"])
    with record_function("backward"):
        loss.backward()
    with record_function("clip"):
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    with record_function("optimizer"):
        s["opt"].step()
        s["opt"].zero_grad(set_to_none=True)
    with record_function("ema"):
        recipe.update_ema(s["ema"], model, tc.ema_decay)


def profile_step(cfg, steps, warmup=5):
    """ms per step by phase and by kind of operator (self CPU time), from torch.profiler over `steps` steps."""
    s = training_state(cfg)
    for step in range(warmup):
        train_step(cfg, s, step)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(warmup, warmup + steps):
            train_step(cfg, s, step)
    wall = (time.perf_counter() - start) * 1e3 / steps
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e3 / steps for e in events if e.key in PHASES}
    kinds = defaultdict(float)
    for e in events:
        if e.key not in PHASES and not e.key.startswith(("Optimizer.", "ProfilerStep")):
            kinds[kind_of(e.key)] += e.self_cpu_time_total / 1e3 / steps
    return wall, phases, dict(kinds), s["model"]


def matmul_shapes(cfg, model):
    """The (rows, inner, cols) of every matrix product in the model's forward: each Linear (rows = its input's
    rows), the patch-embedding conv as a matmul, attention's q k^T and weights @ v per (sample, head)."""
    shapes, hooks = [], []

    def linear_hook(module, args, _):
        x = args[0]
        shapes.append((x.numel() // x.shape[-1], module.in_features, module.out_features))

    def conv_hook(module, args, out):
        c, p = module.in_channels, module.kernel_size[0]
        shapes.append((out.shape[0] * out.shape[2] * out.shape[3], c * p * p, module.out_channels))

    def attention_hook(module, args, _):
        B, N, D = args[0].shape
        hd = D // module.num_heads
        shapes.extend([(N, hd, N, B * module.num_heads), (N, N, hd, B * module.num_heads)])

    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, dit.Attention):
            hooks.append(m.register_forward_hook(attention_hook))
    B = cfg.train.global_batch
    with torch.no_grad():
        x = torch.randn(B, model.in_groups * model.in_channels, model.input_size, model.input_size)
        k = torch.zeros(B, dtype=torch.long) if model.num_tasks else None
        model(x, torch.zeros(B, dtype=torch.long), torch.zeros(B, dtype=torch.long), task=k)
    for h in hooks:
        h.remove()
    return [shape if len(shape) == 4 else (*shape, 1) for shape in shapes]


def roofline_ms(shapes, repeats=20):
    """ms for the step's matrix products alone: forward (m, k) @ (k, n), and backward's two products (the input's
    gradient (m, n) @ (n, k) and the weight's (k, m) @ (m, n)), batched where attention is."""
    operands = []
    for m, k, n, b in shapes:
        a, w, g = torch.randn(b, m, k), torch.randn(b, k, n), torch.randn(b, m, n)
        operands.append((a, w, g, a.transpose(1, 2).contiguous(), w.transpose(1, 2).contiguous()))

    def products():
        for a, w, g, a_t, w_t in operands:
            torch.bmm(a, w)
            torch.bmm(g, w_t)
            torch.bmm(a_t, g)

    products()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        products()
    return (time.perf_counter() - start) * 1e3 / repeats


def print_profile(cfg, steps):
    wall, phases, kinds, model = profile_step(cfg, steps)
    roof = roofline_ms(matmul_shapes(cfg, model))
    print(f"profile of train.py's step over {steps} steps (torch.profiler, CPU): {wall:.1f} ms per step wall, "
          f"{cfg.train.global_batch * 1e3 / wall:.1f} samples/s")
    print("  by phase (inclusive):  " + " | ".join(f"{p} {phases.get(p, 0.0):.1f} ms" for p in PHASES))
    total = sum(kinds.values())
    for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:30s} {ms:7.1f} ms  {100 * ms / total:5.1f} %")
    print(f"matmul-only roofline (the step's products alone, same shapes, fwd + bwd): {roof:.1f} ms per step")
    print(f"step_over_matmul_roofline: {wall / roof:.2f}")


def against(other, cfg_path, overrides, tmp):
    """train.py samples/s of this checkout and of `other`, run in turn A B A B; each the better of its two."""
    here, there = [], []
    for i in range(2):
        for code, rates in ((ROOT, here), (Path(other), there)):
            rates.append(loop_samples_per_s(cfg_path, overrides, Path(tmp) / f"{code.name}{i}", code)[0])
    return max(here), max(there), here, there


def main(argv=None):
    p = argparse.ArgumentParser(description="train.py's loop against the bare model step (see the docstring).")
    p.add_argument("config", nargs="?", default=str(ROOT / "configs" / "depth.yaml"))
    p.add_argument("overrides", nargs="*", help="section.key=value for train.py and the bare step alike")
    p.add_argument("--against", metavar="DIR", help="another checkout: the per-step speedup of this one over it")
    p.add_argument("--profile-steps", type=int, default=20, help="steps under torch.profiler (default 20)")
    args = p.parse_args(argv)
    if args.against and not (Path(args.against) / "train.py").is_file():
        print(f"error: --against {args.against}: no train.py there (give a checkout of minidp)", file=sys.stderr)
        return 2
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
    print_profile(cfg, args.profile_steps)
    if args.against:
        with tempfile.TemporaryDirectory() as tmp:
            mine, theirs, here, there = against(args.against, args.config, args.overrides, tmp)
        print(f"--against {args.against}: train.py samples/s here {', '.join(f'{r:.1f}' for r in here)}, there "
              f"{', '.join(f'{r:.1f}' for r in there)} (A B A B)")
        print(f"train_loop_over_step: {loop / bare:.3f}")
        print(f"step_speedup_over_{Path(args.against).name}: {mine / theirs:.3f}")
        return 0
    print(f"train_loop_over_step: {loop / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
