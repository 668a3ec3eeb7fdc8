"""Training throughput of the dense DiT, and how close it gets to the machine's matmul speed.

CPU mode (default): for the "tiny" preset (32x32 RGB pixels, the laptop pre-training model) and DiT-S/2 on
16x16x4 latents (128 px images, kept small so the run takes about a minute on a CPU), it times full training
steps (forward + backward + AdamW step) and converts them to achieved FLOP/s with the analytic count:
training FLOPs per sample = 2 FLOPs/MAC x 3 (forward + backward is ~3 forwards) x dit_macs(model).
The reference is a large float32 matmul measured in the same run, so the ratio is comparable across machines.

GPU mode (--gpu): DiT-XL/2 and DiT-B/2 at 256 px (32x32x4 latents, as DiT), bf16 autocast, for two paths:
eager with foreach AdamW (train.py before issue 14) and train.py's fastest path (torch.compile, fused AdamW,
TF32: minidp/parallel.py). It prints img/s and MFU = achieved training FLOP/s / the GPU's dense bf16 peak
(989 TFLOP/s for H100 / H200 SXM; other GPUs: a measured bf16 matmul stands in, and the line says so).

Run: python benchmarks/bench_dit.py          (CPU; CUDA when available)
     python benchmarks/bench_dit.py --gpu    (minutes: two compiles of each model)
Headline lines (last): CPU: dit_tiny_samples_per_s, dit_s_samples_per_s, dit_s_matmul_fraction;
                       --gpu: dit_b_img_per_s, dit_xl_img_per_s, dit_xl_mfu.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minidp import parallel  # noqa: E402
from minidp.compute import count_params, dit_macs  # noqa: E402
from minidp.dit import build_dit  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core FLOP/s (SXM datasheets)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device, n, repeats, dtype=torch.float32):
    """GFLOP/s of an (n x n) @ (n x n) matmul: 2 n^3 FLOPs each."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: thread pools, cuBLAS handles
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def training_samples_per_s(model, batch, steps, device, warmup=1, opt=None):
    """Samples/s of full eps-prediction training steps on random data (bf16 autocast on CUDA, as train.py)."""
    model.to(device).train()
    opt = opt or torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)  # DiT's recipe
    g = torch.Generator().manual_seed(0)
    size = (batch, model.in_channels, model.input_size, model.input_size)
    x, eps = torch.randn(size, generator=g).to(device), torch.randn(size, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    y = torch.randint(0, model.num_classes, (batch,), generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for step in range(warmup + steps):
        if step == warmup:  # the first steps pay for allocation, kernel selection (and compiling)
            sync(device)
            start = time.perf_counter()
        with autocast:
            loss = F.mse_loss(model(x, t, y)[:, : model.in_channels].float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def cpu_main(device):
    cpu = device.type == "cpu"
    n, repeats = (2048, 10) if cpu else (8192, 50)
    peak = matmul_gflops(device, n, repeats)

    results = {}
    runs = [
        ("tiny", build_dit("tiny", input_size=32, in_channels=3), 64, 5 if cpu else 50),
        ("s", build_dit("DiT-S/2", input_size=16, in_channels=4), 16 if cpu else 256, 3 if cpu else 30),
    ]
    for key, model, batch, steps in runs:
        macs = dit_macs(model)
        rate = training_samples_per_s(model, batch, steps, device)
        gflops = 2 * 3 * macs * rate / 1e9
        results[key] = (rate, gflops / peak)
        print(
            f"{key}: {count_params(model) / 1e6:.2f}M params, {macs / 1e6:.1f}M MACs/sample fwd, batch {batch}: "
            f"{rate:.1f} samples/s, {gflops:.1f} GFLOP/s = {gflops / peak:.2f} of the first matmul"
        )

    # On a shared machine the load changes during the run: the reference is the better of two matmul
    # measurements, one before and one after the models (so the fraction errs low, not high).
    peak_after = matmul_gflops(device, n, repeats)
    print(f"float32 matmul: {peak:.1f} GFLOP/s before, {peak_after:.1f} after the models")
    peak_best = max(peak, peak_after)
    results = {key: (rate, frac * peak / peak_best) for key, (rate, frac) in results.items()}
    print(f"dit_tiny_samples_per_s: {results['tiny'][0]:.1f}")
    print(f"dit_s_samples_per_s: {results['s'][0]:.1f}")
    print(f"dit_s_matmul_fraction: {results['s'][1]:.3f}")


def gpu_main(device, steps):
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    if peak is None:
        peak = matmul_gflops(device, 8192, 50, torch.bfloat16) * 1e9
        print(f"{name}: no datasheet peak known; MFU is relative to a measured bf16 matmul ({peak / 1e12:.0f} TFLOP/s)")
    env = parallel.Env(device=device)
    parallel.init(env)  # TF32, as train.py
    results = {}
    for key, preset, batch in (("b", "DiT-B/2", 256), ("xl", "DiT-XL/2", 64)):
        for path in ("eager", "fast"):
            torch.manual_seed(0)
            model = build_dit(preset, input_size=32, in_channels=4).to(device)
            opt = None
            if path == "fast":  # train.py's fastest path: compile in place + fused AdamW
                model = parallel.wrap(model, None, env, "ddp", compile_model=True)
                opt = parallel.make_optimizer(model, 1e-4, 0.0, device)
            rate = training_samples_per_s(model, batch, steps, device, warmup=3, opt=opt)
            mfu = 2 * 3 * dit_macs(model) * rate / peak
            results[key, path] = (rate, mfu)
            print(f"{preset} batch {batch} {path:>5}: {rate:7.1f} img/s, MFU {mfu:.3f}", flush=True)
            del model, opt
            torch.cuda.empty_cache()
    fast = "fast" if results["xl", "fast"][0] >= results["xl", "eager"][0] else "eager"
    print(f"dit_b_img_per_s: {max(results['b', p][0] for p in ('eager', 'fast')):.1f}")
    print(f"dit_xl_img_per_s: {results['xl', fast][0]:.1f}")
    print(f"dit_xl_mfu: {results['xl', fast][1]:.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description="DiT training throughput (see the module docstring).")
    p.add_argument("--gpu", action="store_true", help="DiT-XL/2 and DiT-B/2 on a CUDA GPU: eager vs the fast path")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model in --gpu mode")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.gpu and device.type != "cuda":
        print("error: --gpu needs a CUDA device; run without --gpu for the CPU benchmark", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    print(f"device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}")
    gpu_main(device, args.steps) if args.gpu else cpu_main(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
