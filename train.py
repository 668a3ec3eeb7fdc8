"""Train a diffusion model: class-conditional pre-training, fine-tuning for a perception task, or the generalist.

    python train.py configs/depth.yaml [section.key=value ...]          # one process
    torchrun --nproc_per_node=2 train.py configs/depth.yaml             # DDP: gloo on CPU, nccl on CUDA
    torchrun --nproc_per_node=8 train.py configs/depth.yaml train.parallel=fsdp   # sharded (minidp/parallel.py)

One loop, readable top to bottom (STYLE.md): plan the step's global batch -> forward/backward over this
rank's micro-batches -> clip -> AdamW step -> EMA -> log -> checkpoint -> (evaluate). A run writes to
`train.out_dir`: config.yaml (resolved), log.jsonl, ckpt.pt (latest, written atomically), eval.json,
figures/. Re-running the same command resumes from ckpt.pt.

Notable choices:
- Each step's global batch is drawn from (train.seed, step) and split over the ranks (minidp/recipe.py), so the
  number of ranks and accumulation do not change a run's numbers, and resuming is exact. Batches come from the
  world rendered into memory, a real dataset's DataLoader or the latent cache (minidp/data.py); the codec
  (data.codec: pixel or the SD VAE) maps them to the latents the model sees.
- train.mode multitask (the scaling paper's §6.4 generalist): the plan also draws each sample's task; the batch is
  data.make_mixed_batch's, task k's label row is the first task row + k, the loss kind is per sample.
- AdamW as DiT (lr 1e-4, no weight decay) unless the config says so; the loss is recipe.masked_loss. What differs
  between one process, DDP and FSDP (and CPU and GPU: fused AdamW, TF32, compile) is in minidp/parallel.py.
- Bad input (unknown key, wrong type, a mistyped flag, missing or corrupt checkpoint, an architecture that does
  not match, unwritable run directory, a batch the ranks cannot split) is one line on stderr and exit status 2,
  found before anything is written. A fault during the run (a write the OS refuses, a dead loader worker or
  rank) is one line and exit status 3 (minidp/errors.py); the last checkpoint is kept and the same command resumes.
"""

import copy
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from minidp import checkpoint as ckptlib
from minidp import config as cfglib
from minidp import compute, data, evaluate, files, parallel, recipe, schedules, tasks
from minidp.errors import ArgumentParser, FaultError, InputError, fault_of


# The recipe's pieces live in minidp/recipe.py, checkpoints (and the run directory's checks) in minidp/checkpoint.py.

class EvaluationInterrupted(Exception):
    """SIGINT / SIGTERM during the final evaluation (the checkpoint is already complete)."""


def fmt_time(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ----------------------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------------------

def train(argv=None):
    p = ArgumentParser(description="Train a minidp diffusion model (see the module docstring).")
    p.add_argument("config", help="YAML config, e.g. configs/depth.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=100 sample.steps=10")
    args = p.parse_args(argv)
    cfg = cfglib.load_config(args.config, args.overrides)
    tc, dc = cfg.train, cfg.data

    # --- distributed setup: torchrun's RANK / WORLD_SIZE / LOCAL_RANK -> rank, device, backend (minidp/parallel.py) ---
    env = parallel.from_torchrun(tc.device)
    rank, world_size, master, device = env.rank, env.world_size, env.master, env.device

    micro = tc.micro_batch or tc.global_batch // world_size
    if tc.global_batch % (world_size * micro) != 0:
        raise InputError(f"train.global_batch = {tc.global_batch} is not divisible by world size {world_size}"
                         f" x micro batch {micro}")
    accum = tc.global_batch // (world_size * micro)  # micro-steps per optimiser step on each rank

    # --- everything that can be wrong with the input is checked before anything is written ---
    run = tasks.run_tasks(cfg)  # [the task], or a generalist's tasks in its router order
    try:
        for task in run:
            tasks.check_dataset_task(dc.dataset, task.name)
        recipe.timestep_weights(cfg)  # a perception:<weights.json> is read (and checked) now
    except ValueError as e:
        raise InputError(str(e)) from None
    out_dir = Path(tc.out_dir)
    codec = data.make_codec(dc, device)  # pixel, or the SD VAE: the model's latent shape follows it
    data.check_sources(cfg)  # the dataset's folder and sizes, an existing latent cache
    ckpt_path = out_dir / "ckpt.pt"
    resume = ckpt_path.is_file()
    torch.manual_seed(tc.seed)  # the initial weights; everything random after that comes from the batch plan
    if resume:
        ckpt, model = ckptlib.resume_model(ckpt_path, cfg)  # refuses a config that changes the run's shape
        source = f"resuming {ckpt_path} at step {ckpt['step']}"
    else:
        model, source = ckptlib.initial_model(cfg, codec)
    lock = None
    if master:
        ckptlib.check_writable(out_dir)
        lock = ckptlib.lock_run(out_dir)  # a second train.py on this directory stops here
    parallel.init(env, tc.rank_timeout_s)  # the process group under torchrun; TF32 on CUDA

    schedule = schedules.NoiseSchedule.from_config(cfg.diffusion).to(device)
    model = model.to(device).train()  # explicit: evaluation switches its own copy to eval()
    model.checkpoint_activations = tc.checkpoint_activations
    ema = copy.deepcopy(model).requires_grad_(False)  # DiT: EMA starts as an exact copy
    step = 0
    if resume:
        ema.load_state_dict(ckpt["ema"])
        step = ckpt["step"]
        torch.set_rng_state(ckpt["rng"]["torch"])
    is_moe = "num_experts" in model.config
    text = any(task.text for task in run)  # text conditioning, with InstructPix2Pix's condition dropout
    l1_of_task = recipe.loss_kinds(cfg).to(device)  # (K,) bool: True where task k trains with L1 (train.task_loss)
    macs_per_sample, n_params = compute.model_macs(model), compute.count_params(model)
    latent = (model.in_channels, model.input_size, model.input_size)  # the target's shape (in_channels: one group)
    # DDP(model), or FSDP sharding model and EMA in place; compiled if train.compile. The optimizer comes after:
    # under FSDP its state is sharded with the parameters.
    train_model = parallel.wrap(model, ema, env, tc.parallel, compile_model=tc.compile)
    opt = parallel.make_optimizer(model, tc.lr, tc.weight_decay, device)  # fused AdamW (foreach for FSDP on CPU)
    if resume:
        parallel.load_optimizer_state_dict(model, opt, ckpt["opt"])

    if master:
        cfglib.dump(cfg, out_dir / "config.yaml")
        print(f"minidp train | {source}")
        how = f"{tc.parallel} " if world_size > 1 else ""
        print(f"model {cfg.model.preset}: {n_params / 1e6:.2f}M parameters, {macs_per_sample / 1e6:.1f}M MACs "
              f"per sample | task(s) {', '.join(task.name for task in run)} | {world_size} {how}rank(s) on {device.type} | global batch "
              f"{tc.global_batch} = {world_size} x {micro} x {accum} accumulation | {tc.steps} steps", flush=True)

    # SIGINT / SIGTERM: finish the current step, save, exit cleanly.
    stop_requested = {"flag": False}

    def request_stop(signum, frame):
        stop_requested["flag"] = True
        if stop_requested.get("evaluating"):  # the checkpoint is complete: stop evaluating at once
            raise EvaluationInterrupted

    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def save(at_step):  # every rank calls it: under FSDP, gathering the full state dicts is a collective
        state = (parallel.full_state_dict(model), parallel.full_state_dict(ema),
                 parallel.optimizer_state_dict(model, opt))
        if master:
            ckptlib.save_checkpoint(ckpt_path, ckptlib.training_state(*state, at_step, cfg, model,
                                                                      {"torch": torch.get_rng_state()}))

    t_render = time.time()
    # the world rendered into memory (a generalist's: every task's keys), a real dataset's DataLoader, or the
    # latent cache (minidp/data.py)
    cache, about = data.training_source(cfg, step, rank, accum, micro, device)
    if master:
        print(f"data: {about} in {time.time() - t_render:.1f}s", flush=True)
    log_file = files.open_log(out_dir / "log.jsonl") if master else None  # a torn last line is cut off
    # bf16 autocast on CUDA (DESIGN.md); float32 on CPU, where bf16 matmuls are slow.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    samples_seen = step * tc.global_batch
    window_loss, window_steps, window_start, run_start = torch.zeros((), device=device), 0, time.time(), time.time()
    last_saved = step if resume else None
    status = "finished"

    while step < tc.steps:
        # --- 1. this step's global batch plan, identical on every rank ---
        plan = parallel.to_device(recipe.batch_plan(cfg, step, latent, class_dropout=tc.mode == "pretrain", text=text),
                                  device)
        lr = recipe.lr_at(step, tc)
        for group in opt.param_groups:
            group["lr"] = lr

        # --- 2. forward / backward over this rank's micro-batches ---
        step_loss = torch.zeros((), device=device)
        step_balance, loads = torch.zeros((), device=device), None
        for m in range(accum):
            rows = slice((rank * accum + m) * micro, (rank * accum + m + 1) * micro)
            pixels = data.training_batch(cfg, run, plan, rows, device, cache)  # a generalist's: one task per sample
            batch = data.to_latents(pixels, codec)  # target, cond and mask at the latent resolution
            t = plan["t"][rows]
            x_t = recipe.model_input(cfg, schedule,
                                     recipe.noised_target(cfg, run[0], pixels, batch, codec, t, plan["augment_u"][rows]),
                                     plan, rows)  # q_sample, or zeros for train.objective e2e
            # condition latents (+ blanks), label row or class, router index, tokens; the same function as sampling
            cond, y, k, text_in = tasks.model_inputs(model, batch, plan["task"][rows] if "task" in plan else None,
                                                     plan["drop_image"][rows], plan["drop_text"][rows])
            # DDP / FSDP reduce gradients only on the last micro-step; earlier ones accumulate locally.
            with parallel.gradient_sync(train_model, last=m == accum - 1):
                with autocast:
                    out = train_model(torch.cat(cond + [x_t], dim=1), t, y, task=k,
                                      force_drop_ids=plan["drop_label"][rows], **text_in)
                if tc.objective == "e2e":  # the task's own loss after decoding (E2E-FT)
                    loss = recipe.e2e_loss(cfg, run[0], out, x_t, t, pixels, schedule, codec, tc.loss)
                else:
                    loss = recipe.loss(cfg, out, batch, schedule, plan, rows, l1_of_task)
                balance, loads = recipe.balance_terms(model, loss)
                ((loss + balance) / accum).backward()
            step_loss += loss.detach() / accum
            step_balance += balance.detach() / accum

        # --- 3. agree across ranks on the loss and on stopping, then step. `.item()` waits for the GPU, so on
        # CUDA the ranks agree only at log and checkpoint steps (a Ctrl-C then takes effect there); on the CPU,
        # where it costs nothing, at every step.
        window_loss += step_loss
        window_steps += 1
        due = (step + 1) % tc.log_every == 0 or (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps
        stop_now = False
        if due or device.type == "cpu":
            flags = torch.stack([step_loss, window_loss, torch.tensor(float(stop_requested["flag"]), device=device)])
            if env.distributed:
                dist.all_reduce(flags)
                flags[:2] /= world_size
            loss_value, window_value, stop_flag = flags.tolist()
            stop_now = stop_flag > 0
            if not (math.isfinite(loss_value) and math.isfinite(window_value)):
                kept = f"the last good checkpoint (step {last_saved}) is kept at {ckpt_path}" \
                    if last_saved is not None else "no checkpoint was written yet"
                if master:
                    print(f"error: loss is {loss_value} at step {step}; stopping, {kept}", file=sys.stderr, flush=True)
                status = "diverged"
                break
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        recipe.update_ema(ema, model, tc.ema_decay)
        step += 1
        samples_seen += tc.global_batch

        # --- 4. log, checkpoint ---
        if master and (step % tc.log_every == 0 or step == tc.steps):
            elapsed = time.time() - window_start
            rate = window_steps * tc.global_batch / max(elapsed, 1e-9)
            eta = (tc.steps - step) * tc.global_batch / rate
            record = {"step": step, "loss": window_value / window_steps, "lr": lr, "samples_per_s": rate,
                      "train_macs": 3 * macs_per_sample * samples_seen, "time": time.time() - run_start}
            if is_moe:  # this rank's last micro-batch: balance loss and each MoE layer's expert load (L, E)
                record.update(balance_loss=step_balance.item(), expert_load=loads.tolist())
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            print(f"step {step:>6}/{tc.steps} | loss {record['loss']:.4f} | lr {lr:.2e} | "
                  f"{rate:7.1f} samples/s | eta {fmt_time(eta)}", flush=True)
        if step % tc.log_every == 0 or step == tc.steps:
            window_loss, window_steps, window_start = torch.zeros((), device=device), 0, time.time()
        if step % tc.ckpt_every == 0 or step == tc.steps or stop_now:
            save(step)
            last_saved = step
        if stop_now:
            status = "interrupted"
            if master:
                print(f"interrupted: checkpoint saved at step {step} in {ckpt_path}; run the same command to resume",
                      flush=True)
            break
        if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps:
            eval_model = parallel.evaluation_copy(ema, env)  # a collective under FSDP; rank 0 evaluates
            if master:
                evaluate.evaluate(eval_model, cfg, out_dir, device, quick=True, codec=codec)

    # --- 5. evaluate with the same code as sample.py ---
    if status == "finished":
        eval_model = parallel.evaluation_copy(ema, env)
        if master:
            print(f"training done in {fmt_time(time.time() - run_start)}; evaluating", flush=True)
            stop_requested["evaluating"] = True
            try:
                evaluate.evaluate(eval_model, cfg, out_dir, device, codec=codec)
            except EvaluationInterrupted:
                print(f"interrupted during evaluation: the checkpoint at step {step} in {ckpt_path} is complete; "
                      f"evaluate it with python sample.py {out_dir}", flush=True)
            stop_requested["evaluating"] = False
    if log_file:
        log_file.close()
    if lock:
        lock.close()  # releases the lock
    for sig, handler in previous_handlers.items():
        signal.signal(sig, handler)
    parallel.destroy(env)
    return {"finished": 0, "interrupted": 0, "diverged": 1}[status]


def main(argv=None):
    try:
        return train(argv)
    except (cfglib.ConfigError, InputError, *data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FaultError, OSError, RuntimeError) as e:  # a failed write, a dead worker or rank: the checkpoint is kept
        fault = e if isinstance(e, FaultError) else fault_of(e)
        if fault is None:
            raise
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would name a dead worker again at exit
        print(f"error: {fault}", file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
