"""Training throughput of the dense DiT, and how close it gets to the machine's matmul speed.

For the "tiny" preset (32x32 RGB pixels, the laptop pre-training model) and DiT-S/2 on 16x16x4 latents
(128 px images, kept small so the run takes about a minute on a CPU), it times full training steps
(forward + backward + AdamW step) and converts them to achieved FLOP/s with the analytic count:
training FLOPs per sample = 2 FLOPs/MAC x 3 (forward + backward is ~3 forwards) x dit_macs(model).
The reference is a large float32 matmul measured in the same run, so the ratio is comparable across machines.

Run: python benchmarks/bench_dit.py          (uses CUDA when available, else CPU)
Headline lines (last): dit_tiny_samples_per_s, dit_s_samples_per_s, dit_s_matmul_fraction.
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from minidp.compute import count_params, dit_macs
from minidp.dit import build_dit


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device, n, repeats):
    """GFLOP/s of an (n x n) @ (n x n) float32 matmul: 2 n^3 FLOPs each."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up: thread pools, cuBLAS handles
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def training_samples_per_s(model, batch, steps, device, warmup=1):
    """Samples/s of full eps-prediction training steps on random data."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)  # DiT's recipe
    g = torch.Generator().manual_seed(0)
    size = (batch, model.in_channels, model.input_size, model.input_size)
    x, eps = torch.randn(size, generator=g).to(device), torch.randn(size, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    y = torch.randint(0, model.num_classes, (batch,), generator=g).to(device)
    for step in range(warmup + steps):
        if step == warmup:  # the first step pays for allocation and kernel selection
            sync(device)
            start = time.perf_counter()
        loss = F.mse_loss(model(x, t, y)[:, : model.in_channels], eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def main():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cpu = device.type == "cpu"
    torch.manual_seed(0)
    print(f"device: {device}, threads: {torch.get_num_threads()}, torch {torch.__version__}")
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


if __name__ == "__main__":
    main()
