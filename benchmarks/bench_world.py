"""How fast the synthetic world renders: scenes per second with every modality, batched, at 32 and 64 px.

Run: python benchmarks/bench_world.py [--batch 64] [--repeats 5]

For each resolution and for 1 and 2 intra-op threads it renders `repeats` fresh batches (new indices each time,
so nothing is cached) after a warm-up, and reports the best and the median rate; the best is the honest figure on
a shared machine, where other processes only ever slow a run down. The headline is the better thread count's
best rate (a data-loader worker may use either; PyTorch's DataLoader workers default to 1 thread).

There is no reference renderer to take a ratio against, so to make runs on differently loaded machines
comparable it also reports the cost of one scene in units of a memory-bound 1M-element float32 add timed in the
same run on one thread (`world_scene_cost_in_adds_64`: lower is better, and much less sensitive to the machine's
load than a rate).

On an oversubscribed machine (more busy processes than cores) OpenMP's spin-waiting makes 2 threads many times
slower than 1; OMP_WAIT_POLICY=PASSIVE avoids that. The script reports whatever the environment gives.

Headline lines, printed last: world_scenes_per_s_32, world_scenes_per_s_64.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minidp import world  # noqa: E402


def time_add(repeats=20):
    """Median seconds of one 1M-element float32 add: the load-independent unit of cost."""
    x = torch.rand(1_000_000)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x + x
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    specs_start = time.perf_counter()
    n_specs = 500
    for i in range(n_specs):
        world.scene_spec(10_000_000 + i)
    specs_per_s = n_specs / (time.perf_counter() - specs_start)
    headline, cost = {}, None
    start_index = 0
    for resolution in (32, 64):
        best_rate = 0.0
        for threads in (1, 2):
            torch.set_num_threads(threads)
            world.render(range(4), resolution)  # warm-up
            rates, costs = [], []
            for _ in range(args.repeats):
                indices = range(start_index, start_index + args.batch)
                start_index += args.batch
                start = time.perf_counter()
                world.render(indices, resolution)
                seconds = time.perf_counter() - start
                rates.append(args.batch / seconds)
                if threads == 1:  # the unit add runs on one thread too, so the ratio is like for like
                    costs.append(seconds / args.batch / time_add())
            unit = f", one scene = {min(costs):.0f} 1M-element adds" if costs else ""
            print(f"{resolution} px, {threads} thread(s): best {max(rates):.0f} scenes/s, "
                  f"median {statistics.median(rates):.0f} scenes/s{unit}")
            best_rate = max(best_rate, max(rates))
            if resolution == 64 and costs:
                cost = min(costs)
        headline[resolution] = best_rate
    print(f"world_specs_per_s: {specs_per_s:.0f}")
    print(f"world_scene_cost_in_adds_64: {cost:.0f}")
    print(f"world_scenes_per_s_32: {headline[32]:.0f}")
    print(f"world_scenes_per_s_64: {headline[64]:.0f}")


if __name__ == "__main__":
    main()
