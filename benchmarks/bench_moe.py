"""Speed of the MoE layer against a dense MLP doing the same active compute (forward + backward).

Matching: a top-2 MoE whose GELU experts have hidden width h/2 spends 2 * (2 * D * h/2) = 2 * D * h MACs
per token in its experts, exactly the dense GELU MLP of width h; the router adds D * E MACs (0.5 % at
D = 384, h = 1536, E = 8). So the time ratio measures what dispatch costs: routing, top-k, the argsort,
the gather, the weighted scatter-add and running E small matmuls instead of one big one.

Prints tokens/s for E in {4, 8, 16} and, last, the headline `moe_over_dense_time` for E = 8, K = 2.
Timings: the fastest of interleaved repeats (dense and MoE alternate, so machine noise hits both; the
minimum is the least disturbed run). On a shared machine wall time is still noisy, and the MoE's many
smaller ops suffer more from a busy co-tenant than one big matmul does, so the process CPU-time ratio is
printed too (`moe_over_dense_cpu_time`, measured with one thread so that it is not inflated by idle
spinning): it is the stable figure for the dispatch overhead itself.

Run: python benchmarks/bench_moe.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout, no install needed
from minidp.dit import Mlp
from minidp.moe import MoEFeedForward

B, N, D, H = 8, 256, 384, 1536      # batch, tokens (a 32x32 latent at patch 2), DiT-S width, 4D
TOP_K, REPEATS, WARMUP = 2, 15, 3


def step(module, x):
    """One forward + backward, the unit of a training step."""
    module.zero_grad(set_to_none=True)
    module(x).square().mean().backward()


def seconds(module, x, clock):
    start = clock()
    step(module, x)
    return clock() - start


def fastest(modules, x, clock):
    """{name: fastest step time} over REPEATS rounds, each round running every module once."""
    times = {name: [] for name in modules}
    for _ in range(REPEATS):
        for name, module in modules.items():
            times[name].append(seconds(module, x, clock))
    return {name: min(t) for name, t in times.items()}


def main():
    torch.manual_seed(0)
    x = torch.randn(B, N, D, requires_grad=True)
    dense = Mlp(D, H)
    moes = {E: MoEFeedForward(D, E, TOP_K, hidden_dim=H // TOP_K, expert="gelu") for E in (4, 8, 16)}
    for module in [dense, *moes.values()]:
        for _ in range(WARMUP):
            step(module, x)

    modules = {"dense": dense, **moes}
    wall = fastest(modules, x, time.perf_counter)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = fastest(modules, x, time.process_time)
    torch.set_num_threads(threads)

    print(f"threads: {threads}, B={B} N={N} D={D}, dense hidden {H}, "
          f"MoE top-{TOP_K} of experts with hidden {H // TOP_K} (equal active MACs)")
    print(f"dense_tokens_per_s: {B * N / wall['dense']:.0f}")
    for E in moes:
        loads = moes[E].last_aux["load"]
        print(f"moe_E{E}_tokens_per_s: {B * N / wall[E]:.0f}   (max/min expert load "
              f"{loads.max():.3f}/{loads.min():.3f})")
    for E in moes:
        print(f"moe_E{E}_over_dense_time: {wall[E] / wall['dense']:.2f}")
    print(f"moe_over_dense_cpu_time: {cpu[8] / cpu['dense']:.2f}")
    print(f"moe_over_dense_time: {wall[8] / wall['dense']:.2f}")


if __name__ == "__main__":
    main()
