"""Expert load of MoE training runs, read from their log.jsonl: how unbalanced did routing get?

    python benchmarks/expert_load.py runs/upcycle_depth runs/upcycle_noaux

For each run, the last logged step's per-layer loads (fraction of routed (token, slot) pairs per expert, one
rank's last micro-batch) as max load / mean load: 1.0 is perfect balance, E is everything on one expert.
The headline line per run is `expert_load_max_over_mean[<run>]: N` (the worst layer), printed last.
"""

import json
import sys
from pathlib import Path


def max_over_mean(loads):
    """Per layer: max expert load / mean expert load (the mean of E fractions is 1/E)."""
    return [max(layer) * len(layer) / sum(layer) for layer in loads]


def main(runs):
    headlines = []
    for run in runs:
        records = [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]
        records = [r for r in records if "expert_load" in r]
        if not records:
            print(f"{run}: no expert_load records (not an MoE run?)")
            continue
        last = records[-1]
        per_layer = max_over_mean(last["expert_load"])
        print(f"{run}: step {last['step']}, balance loss {last['balance_loss']:.4f}, max/mean load per layer "
              + " ".join(f"{v:.2f}" for v in per_layer))
        headlines.append(f"expert_load_max_over_mean[{Path(run).name}]: {max(per_layer):.2f}")
    print("\n".join(headlines))


if __name__ == "__main__":
    main(sys.argv[1:])
