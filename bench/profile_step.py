"""Where one training step of the `cpu` preset spends its time: data, forward, backward,
optimizer.

    python bench/profile_step.py [--steps 30] [--data-dir DIR]

Builds the preset's parts exactly as `fit` does (`make_parts`: on-device loader, bf16
autocast where the CPU has it natively, channels_last), times `--steps` steps at each crop
size the preset trains at (after 5 untimed warm-up steps per size, which pay for kernel
selection and memory allocation), and splits each step with wall-clock timers. Writes
`profile_step_<device>.json` in `resnet_edu/shipped/results/` with the hardware (CPU model and
bf16 support), command and the machine's load (`idle.LoadGuard`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import LoadGuard

from resnet_edu.data import load_cifar10, load_cifar10_or_sample
from resnet_edu.locations import device_results_file
from resnet_edu.precision import autocast
from resnet_edu.recipe import build_model, preset
from resnet_edu.runtime import cpu_description, device_name, environment_report, seed_everything
from resnet_edu.train import make_parts, training_images

PARTS = ("data", "forward", "backward", "optimizer")


def profile(parts, size: int, steps: int) -> dict[str, float]:
    """Mean milliseconds per step of each part, at crop `size`."""
    parts.loader.size = size
    batches = (b for _ in range(1000) for b in parts.loader)
    total = dict.fromkeys(PARTS, 0.0)
    for i in range(5 + steps):
        t0 = time.perf_counter()
        x, y = next(batches)
        t1 = time.perf_counter()
        with autocast(parts.device, parts.dtype):
            loss = parts.criterion(parts.forward(x).float(), y)
        t2 = time.perf_counter()
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        parts.optimizer.step()
        t4 = time.perf_counter()
        if i >= 5:
            for name, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                total[name] += seconds
    return {name: round(1000 * s / steps, 2) for name, s in total.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py/")
    p.add_argument("--allow-busy", action="store_true",
                   help="write the JSON even if other programs used the CPU (it says so)")
    args = p.parse_args()
    config = preset("cpu")
    data = load_cifar10(args.data_dir) if args.data_dir else load_cifar10_or_sample()
    seed_everything(0)
    parts = make_parts(build_model(config), training_images(data, config), config, "cpu")
    sizes = sorted({config.min_resolution, 32})
    with LoadGuard() as guard:
        per_size = {size: profile(parts, size, args.steps) for size in sizes}
    guard.check(args.allow_busy)
    rows = {}
    for size, ms in per_size.items():
        step = sum(ms.values())
        rows[str(size)] = {"ms": ms, "step_ms": round(step, 2),
                           "images_per_s": round(config.batch_size / step * 1000, 1),
                           "share": {k: round(v / step, 3) for k, v in ms.items()}}
        print(f"{size} px: {step:.0f} ms per step of {config.batch_size} "
              f"({rows[str(size)]['images_per_s']:,.0f} images/s): "
              + ", ".join(f"{k} {v:.1f} ms ({100 * v / step:.0f} %)" for k, v in ms.items()))
    device = device_name()
    result = {"experiment": "one training step of the cpu preset, split into its parts",
              "command": "python bench/profile_step.py " + " ".join(sys.argv[1:]),
              "hardware": {"device": device, "cpu": cpu_description(), "cores": os.cpu_count()},
              "torch": environment_report()["torch"], "autocast": str(parts.dtype),
              "batch_size": config.batch_size, "steps": args.steps, "per_crop_size": rows,
              "machine_load": guard.report(args.allow_busy)}
    out = device_results_file("profile_step", device)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
