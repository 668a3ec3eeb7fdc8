"""Train a diffusion model: class-conditional pre-training or fine-tuning for a perception task.

    python train.py configs/depth.yaml [section.key=value ...]          # one process
    torchrun --nproc_per_node=2 train.py configs/depth.yaml             # DDP: gloo on CPU, nccl on CUDA

One loop, readable top to bottom (STYLE.md): plan the step's global batch -> forward/backward over this
rank's micro-batches -> clip -> AdamW step -> EMA -> log -> checkpoint -> (evaluate). A run writes to
`train.out_dir`: config.yaml (resolved), log.jsonl, ckpt.pt (latest, written atomically), eval.json,
figures/. Re-running the same command resumes from ckpt.pt.

Notable choices:
- The global batch of step s (scene indices, timesteps, label drops, noise) is drawn from a generator seeded
  by (train.seed, s) and each rank takes its own slice of it. So a run's numbers do not depend on the number
  of ranks or on accumulation (2 ranks x B == 1 rank x 2B, a test checks it), and resuming is exact. DiT
  seeds each rank with `seed * world_size + rank` instead, which ties the data to the world size.
- Loss: MSE against the prediction type's target, averaged over the valid pixels of each sample, then over
  samples (Marigold masks invalid depth). AdamW as DiT (lr 1e-4, no weight decay) unless the config says so.
- Bad input (unknown key, wrong type, missing or corrupt checkpoint, an architecture that does not match,
  unwritable run directory, a batch the ranks cannot split) is one line on stderr and exit status 2, found
  before anything is written.
"""

import argparse
import contextlib
import copy
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from minidp import config as cfglib
from minidp import compute, data, dit, moe, schedules, upcycle, vae


class InputError(Exception):
    """Bad input the user can fix: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------

def choose_device(pref, local_rank):
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("train.device = cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def lr_at(step, tc):
    """Linear warm-up, then constant (DiT) or exponential decay from lr to lr_final over the run (Marigold)."""
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * (tc.lr_final / tc.lr) ** progress


@torch.no_grad()
def update_ema(ema, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (DiT's 10-line helper)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def load_checkpoint(path, what):
    """torch.load with weights_only=True, turning every failure into one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what}: checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, another format, a pickle with code in it
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InputError(f"{what}: {path} is not a readable minidp/DiT checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise InputError(f"{what}: {path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def architecture(model_config):
    """An untrained model of the architecture a checkpoint's `model_config` describes (dense DiT or MoE DiT)."""
    return moe.DiTMoE(**model_config) if "num_experts" in model_config else dit.DiT(**model_config)


def model_from_checkpoint(ckpt, path, weights="ema"):
    """Rebuild the model a minidp checkpoint describes and load its `weights` ("ema" or "model")."""
    if "model_config" not in ckpt or weights not in ckpt:
        keys = ", ".join(list(ckpt)[:5])
        raise InputError(f"{path}: not a minidp training checkpoint (no 'model_config'/'{weights}'; keys: {keys})")
    try:
        model = architecture(ckpt["model_config"])
        dit.load_dit_state_dict(model, ckpt[weights])
    except (TypeError, ValueError, RuntimeError) as e:
        one_line = " ".join(line.strip() for line in str(e).splitlines())  # the mismatch lists span lines
        raise InputError(f"{path}: {one_line}") from None
    return model


def save_checkpoint(path, state):
    """Write to a temporary file, then rename: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def check_writable(out_dir):
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise InputError(f"train.out_dir: cannot write to {out_dir} ({e.strerror or e})") from None


def masked_mse(pred, target, mask):
    """Per-sample mean squared error over the mask's pixels (all channels), then the mean over samples."""
    m = mask[:, None].to(pred.dtype)  # (B, 1, H, W)
    per_sample = ((pred - target) ** 2 * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) * pred.shape[1]).clamp_min(1)
    return per_sample.mean()


def fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ----------------------------------------------------------------------------------------------------------
# Building the model
# ----------------------------------------------------------------------------------------------------------

def new_model(cfg, codec):
    """A freshly initialised class-conditional DiT (or DiT-MoE, for an MoE preset) for this config's data."""
    kwargs = dict(input_size=cfg.data.resolution // codec.downsample, in_channels=codec.channels,
                  num_classes=cfg.data.num_classes, learn_sigma=cfg.model.learn_sigma,
                  class_dropout_prob=cfg.model.class_dropout_prob)
    if cfg.model.preset in moe.DiTMoE_models:
        return moe.build_moe(cfg.model.preset, balance_alpha=cfg.model.balance_alpha, **kwargs)
    if cfg.model.preset not in dit.DiT_models:
        raise InputError(f"model.preset: unknown preset {cfg.model.preset!r}; valid: "
                         f"{', '.join(list(dit.DiT_models) + list(moe.DiTMoE_models))}")
    return dit.build_dit(cfg.model.preset, **kwargs)


def for_task(model, cfg, codec):
    """Marigold's conversion of a class-conditional model: widen the input for the condition images and give
    the task its label row and patch embedding. A model already converted (a fine-tuned checkpoint) is kept."""
    groups = data.num_cond_images(cfg.data.task) + 1
    expected_size = cfg.data.resolution // codec.downsample
    if model.input_size != expected_size or model.in_channels != codec.channels:
        raise InputError(
            f"the checkpoint's model takes {model.in_channels}x{model.input_size}x{model.input_size} "
            f"inputs, this config needs {codec.channels}x{expected_size}x{expected_size}")
    if model.num_tasks == 0:
        return dit.make_multitask(dit.widen_input(model, groups), 1)
    if model.in_groups != groups:
        raise InputError(f"the checkpoint's model takes {model.in_groups} input groups, task "
                         f"{cfg.data.task!r} needs {groups}")
    return model


def initial_model(cfg, codec):
    """The model a new run starts from, and one line saying where it came from."""
    tc = cfg.train
    if tc.mode == "pretrain":
        if tc.init_from:
            ckpt = load_checkpoint(tc.init_from, "train.init_from")
            return model_from_checkpoint(ckpt, tc.init_from), f"continuing from {tc.init_from}"
        return new_model(cfg, codec), f"pre-training {cfg.model.preset} from scratch"

    if tc.upcycle_from:  # the scaling paper's §4.4: upcycle a fine-tuned dense model, continue fine-tuning
        ckpt = load_checkpoint(tc.upcycle_from, "train.upcycle_from")
        dense = for_task(model_from_checkpoint(ckpt, tc.upcycle_from), cfg, codec)
        m = cfg.model
        try:
            model = upcycle.upcycle(dense, m.upcycle_experts, m.upcycle_top_k, every=m.upcycle_every,
                                    generator=torch.Generator().manual_seed(tc.seed), balance_alpha=m.balance_alpha)
        except ValueError as e:
            raise InputError(f"train.upcycle_from: {tc.upcycle_from}: {e}") from None
        return model, (f"upcycling {tc.upcycle_from} (its step {ckpt.get('step', '?')}) to {m.upcycle_experts} "
                       f"experts, top-{m.upcycle_top_k}, every {m.upcycle_every} block(s)")

    use_init = bool(tc.init_from) and (Path(tc.init_from).is_file() or not tc.init_optional)
    if use_init:  # a missing file is an error unless init_optional says the quickstart may start from scratch
        ckpt = load_checkpoint(tc.init_from, "train.init_from")
        model = model_from_checkpoint(ckpt, tc.init_from)
        source = f"fine-tuning from {tc.init_from} (its step {ckpt.get('step', '?')})"
    else:
        model = new_model(cfg, codec)
        missing = f" ({tc.init_from} not found, init_optional: true)" if tc.init_from else ""
        source = f"fine-tuning {cfg.model.preset} from scratch{missing}"
    return for_task(model, cfg, codec), source


# ----------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description="Train a minidp diffusion model (see the module docstring).")
    p.add_argument("config", help="YAML config, e.g. configs/depth.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=100 sample.steps=10")
    return p.parse_args(argv)


def train(argv=None):
    args = parse_args(argv)
    cfg = cfglib.load_config(args.config, args.overrides)
    tc, dc = cfg.train, cfg.data

    # --- distributed setup (nanoGPT-style: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK) ---
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    master = rank == 0
    device = choose_device(tc.device, local_rank)

    micro = tc.micro_batch or tc.global_batch // world_size
    if tc.global_batch % (world_size * micro) != 0:
        raise InputError(f"train.global_batch = {tc.global_batch} is not divisible by world size {world_size}"
                         f" x micro batch {micro}")
    accum = tc.global_batch // (world_size * micro)  # micro-steps per optimiser step on each rank

    # --- everything that can be wrong with the input is checked before anything is written ---
    out_dir = Path(tc.out_dir)
    codec = vae.make_codec("pixel")
    ckpt_path = out_dir / "ckpt.pt"
    resume = ckpt_path.is_file()
    torch.manual_seed(tc.seed)  # the initial weights; everything random after that comes from the batch plan
    if resume:
        ckpt = load_checkpoint(ckpt_path, "resume")
        saved = ckpt.get("config", {})
        for section, key in (("model", "preset"), ("data", "task"), ("data", "resolution"), ("train", "mode")):
            was, now = saved.get(section, {}).get(key), getattr(getattr(cfg, section), key)
            if was != now:
                raise InputError(f"{ckpt_path} was trained with {section}.{key} = {was!r} but the config says "
                                 f"{now!r}; choose another train.out_dir or delete the old run")
        model = model_from_checkpoint(ckpt, ckpt_path, weights="model")
        source = f"resuming {ckpt_path} at step {ckpt['step']}"
    else:
        model, source = initial_model(cfg, codec)
    if master:
        check_writable(out_dir)

    if ddp:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    schedule = schedules.NoiseSchedule(cfg.diffusion.schedule, cfg.diffusion.T,
                                       cfg.diffusion.beta_start, cfg.diffusion.beta_end,
                                       cfg.diffusion.zero_terminal_snr)
    # t ~ Uniform{0..T-1} (DiT), or ADDP's contribution-aware Multinomial(c_t^2) (its Algorithm B)
    weights = cfg.diffusion.timestep_weights or [1.0]
    timesteps = schedules.MultinomialTimesteps(weights, cfg.diffusion.T)
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)  # DiT: EMA starts as an exact copy
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    step = 0
    if resume:
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
        torch.set_rng_state(ckpt["rng"]["torch"])
    is_moe = "num_experts" in model.config
    # No find_unused_parameters even for MoE: an expert no token picked still runs on an empty slice, so
    # every parameter gets a (zero) gradient (tests/test_moe.py checks it).
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if ddp else model

    # the label the model is conditioned on: the scene's class (pre-training) or the task's row (fine-tuning)
    task_label = None if tc.mode == "pretrain" else dit.task_label(model, 0)
    macs_per_sample = compute.model_macs(model)
    latent = (model.in_channels, model.input_size, model.input_size)  # the target's shape (in_channels: one group)

    if master:
        cfglib.dump(cfg, out_dir / "config.yaml")
        n_params = compute.count_params(model)
        print(f"minidp train | {source}")
        print(f"model {cfg.model.preset}: {n_params / 1e6:.2f}M parameters, {macs_per_sample / 1e6:.1f}M MACs "
              f"per sample | task {dc.task} | {world_size} rank(s) on {device.type} | global batch "
              f"{tc.global_batch} = {world_size} x {micro} x {accum} accumulation | {tc.steps} steps", flush=True)

    # SIGINT / SIGTERM: finish the current step, save, exit cleanly.
    stop_requested = {"flag": False}

    def request_stop(signum, frame):
        stop_requested["flag"] = True

    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def save(at_step):
        if master:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                "step": at_step, "config": cfglib.to_dict(cfg), "model_config": dict(model.config),
                "tasks": [dc.task], "rng": {"torch": torch.get_rng_state()},
            })

    t_render = time.time()
    cache = data.render_cache(dc, dc.train_size)  # every rank holds every scene: any rank may need any index
    if master:
        print(f"data: {dc.train_size} training scenes of the {dc.dataset} at {dc.resolution} px rendered in "
              f"{time.time() - t_render:.1f}s", flush=True)
    log_file = open(out_dir / "log.jsonl", "a") if master else None
    # bf16 autocast on CUDA (DESIGN.md); float32 on CPU, where bf16 matmuls are slow.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    samples_seen = step * tc.global_batch
    window_loss, window_steps, window_start, run_start = 0.0, 0, time.time(), time.time()
    last_saved = step if resume else None
    status = "finished"

    while step < tc.steps:
        # --- 1. this step's global batch plan, identical on every rank ---
        gen = torch.Generator().manual_seed(tc.seed * 2**32 + step)
        indices = torch.randint(dc.train_size, (tc.global_batch,), generator=gen)
        t = timesteps.sample(tc.global_batch, generator=gen)
        drop = torch.rand(tc.global_batch, generator=gen) < (cfg.model.class_dropout_prob if task_label is None else 0.0)
        noise = torch.randn((tc.global_batch, *latent), generator=gen)
        lr = lr_at(step, tc)
        for group in opt.param_groups:
            group["lr"] = lr

        # --- 2. forward / backward over this rank's micro-batches ---
        step_loss = torch.zeros((), device=device)
        step_balance, loads = torch.zeros((), device=device), None
        for m in range(accum):
            sl = slice((rank * accum + m) * micro, (rank * accum + m + 1) * micro)
            batch = data.make_batch(dc, indices[sl], device, cache=cache)
            x0 = codec.encode(batch["target"])
            eps = noise[sl].to(device)
            t_m = t[sl].to(device)
            x_t = schedule.q_sample(x0, t_m, eps)
            x_in = torch.cat([codec.encode(c) for c in batch["cond"]] + [x_t], dim=1)
            y = batch["label"] if task_label is None else torch.full_like(batch["label"], task_label)
            task = None if task_label is None else torch.zeros_like(y)
            # DDP all-reduces gradients only on the last micro-step; earlier ones accumulate locally.
            last = m == accum - 1
            with train_model.no_sync() if ddp and not last else contextlib.nullcontext():
                with autocast:
                    out = train_model(x_in, t_m, y, task=task, force_drop_ids=drop[sl].to(device))
                    pred = out[:, : x0.shape[1]].float()  # drop the learned-sigma half if the model has one
                loss = masked_mse(pred, schedule.target(x0, eps, t_m, cfg.diffusion.prediction), batch["mask"])
                if is_moe:  # DiT-MoE's balance loss, returned explicitly by the MoE layers of this forward
                    balance, loads = moe.moe_aux(model)
                    step_balance += balance.detach() / accum
                    loss_total = loss + balance
                else:
                    loss_total = loss
                (loss_total / accum).backward()
            step_loss += loss.detach() / accum

        # --- 3. agree across ranks on the loss and on stopping, then step ---
        flags = torch.stack([step_loss, torch.tensor(float(stop_requested["flag"]), device=device)])
        if ddp:
            dist.all_reduce(flags)
            flags[0] /= world_size
        loss_value, stop_now = flags[0].item(), flags[1].item() > 0
        if not math.isfinite(loss_value):
            kept = f"the last good checkpoint (step {last_saved}) is kept at {ckpt_path}" if last_saved is not None \
                else "no checkpoint was written yet"
            if master:
                print(f"error: loss is {loss_value} at step {step}; stopping, {kept}", file=sys.stderr, flush=True)
            status = "diverged"
            break
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_ema(ema, model, tc.ema_decay)
        step += 1
        samples_seen += tc.global_batch

        # --- 4. log, checkpoint ---
        window_loss += loss_value
        window_steps += 1
        if master and (step % tc.log_every == 0 or step == tc.steps):
            elapsed = time.time() - window_start
            rate = window_steps * tc.global_batch / max(elapsed, 1e-9)
            eta = (tc.steps - step) * tc.global_batch / rate
            record = {"step": step, "loss": window_loss / window_steps, "lr": lr, "samples_per_s": rate,
                      "train_macs": 3 * macs_per_sample * samples_seen, "time": time.time() - run_start}
            if is_moe:  # this rank's last micro-batch: balance loss and each MoE layer's expert load (L, E)
                record.update(balance_loss=step_balance.item(), expert_load=loads.tolist())
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            print(f"step {step:>6}/{tc.steps} | loss {record['loss']:.4f} | lr {lr:.2e} | "
                  f"{rate:7.1f} samples/s | eta {fmt_time(eta)}", flush=True)
            window_loss, window_steps, window_start = 0.0, 0, time.time()
        if step % tc.ckpt_every == 0 or step == tc.steps or stop_now:
            save(step)
            last_saved = step
        if stop_now:
            status = "interrupted"
            if master:
                print(f"interrupted: checkpoint saved at step {step} in {ckpt_path}; run the same command to resume",
                      flush=True)
            break
        if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps and master:
            import sample  # scripts may import scripts; modules never do

            sample.evaluate(ema, cfg, out_dir, device, quick=True)

    # --- 5. evaluate with the same code as sample.py ---
    if status == "finished" and master:
        import sample

        print(f"training done in {fmt_time(time.time() - run_start)}; evaluating", flush=True)
        sample.evaluate(ema, cfg, out_dir, device)
    if log_file:
        log_file.close()
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return {"finished": 0, "interrupted": 0, "diverged": 1}[status]


def main(argv=None):
    try:
        return train(argv)
    except (cfglib.ConfigError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
