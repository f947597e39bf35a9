"""The loss landscapes of the trained family (Li et al. 2018), for notebook 07.

    python bench/landscapes.py --data-dir data/cifar10   # four nets: an hour or more, 2 cores
    python bench/landscapes.py --quick          # the shipped sample, a coarse grid, seconds

For plain-20, ResNet-20, plain-56 and ResNet-56, with the shipped trained weights
(`resnet_edu.pretrained.load_pretrained`), it measures on one fixed set of training images
(the first `--images` of the 45,000, the same for every net, BatchNorm in eval mode):

- the loss along a filter-normalized random direction d1 (seed `--seed`), alpha in [-1, 1];
- the loss on Goodfellow et al.'s (2015) line from the initial weights (alpha 0, rebuilt with
  `pretrained.initial`, the seeded start of the family's training) to the trained ones
  (alpha 1), from -0.25 to 1.5 in steps of 1/16 (BatchNorm's running statistics are
  the trained net's at every point, as everywhere here: they are not weights);
- the loss over a `--grid` x `--grid` grid on [-1, 1]^2 spanned by d1 and d2 (seed + 1),
  as Li et al.'s Fig. 5 (they use 51 x 51 points on all 50,000 training images; the default
  here is 21 x 21 on 500, about an hour for the four nets on a 2-core CPU without bf16:
  a finer grid shows roughness better than more images would);
- the Hessian's extreme eigenvalues at the trained weights (Lanczos, `--lanczos` steps, on the
  first `--hessian-images` of those images) and |lam_min / lam_max| (Li et al., Sec. 6, Fig. 7).

Every net's result is stored in `runs/landscapes/<net>.json` as soon as it is done, so running
the same command again continues where it stopped. When all nets are done it writes
`results/landscapes.json` (settings, per-net results and seconds, hardware, command, load).
The numbers do not depend on the machine's load (fixed computations); the seconds do.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle import LoadGuard
from per_net import (
    add_arguments,
    check_weights,
    measure_each,
    output_roots,
    weights_sha256,
    write_results,
)

from resnet_edu.data import load_cifar10, load_sample
from resnet_edu.evaluation import evaluate
from resnet_edu.landscape import (
    difference,
    filter_normalized_direction,
    grid,
    hessian_extremes,
    line,
    local_minima,
)
from resnet_edu.pretrained import initial, load_pretrained

NETS = ("plain20", "resnet20", "plain56", "resnet56")
LI_ET_AL = ("Li et al. 2018 (Fig. 5, Fig. 7): ResNet-56 with skip connections has a smooth, "
            "nearly convex 2-D landscape and a small |lam_min / lam_max|; without them "
            "(their plain-56) it is chaotic, with large negative curvature; at 20 layers the "
            "two look alike. Their nets: 300 epochs, 51 x 51 grid, all 50,000 training images")


def settings_of(args: argparse.Namespace, images: int) -> dict[str, Any]:
    return {"images": images, "grid": args.grid, "span": 1.0, "line_points": args.line_points,
            "init_line": [-0.25, 1.5], "init_points": 8 if args.quick else 29,
            "seed_d1": args.seed, "seed_d2": args.seed + 1,
            "hessian_images": min(args.hessian_images, images), "lanczos_steps": args.lanczos,
            "data": "sample" if args.quick else "CIFAR-10 training images",
            "weights": args.weights_dir or "shipped"}


def rounded(t: torch.Tensor) -> Any:
    return [[round(float(x), 5) for x in row] for row in t] if t.ndim == 2 else \
        [round(float(x), 5) for x in t]


def measure(name: str, images, settings: dict[str, Any], weights_dir: str | None
            ) -> dict[str, Any]:
    t0 = time.perf_counter()
    path = None if weights_dir is None else Path(weights_dir) / f"{name}.pt"
    model = load_pretrained(name, path)  # float32, eval mode, CPU
    d1 = filter_normalized_direction(model, seed=settings["seed_d1"])
    d2 = filter_normalized_direction(model, seed=settings["seed_d2"])
    at_trained = evaluate(model, images)
    span, n = settings["span"], settings["grid"]
    random_line = line(model, d1, torch.linspace(-span, span, settings["line_points"]), images)
    lo, hi = settings["init_line"]
    towards_init = difference(initial(name), model)  # theta_0 - theta
    # the stored alpha runs from the initial (0) to the trained (1) weights:
    # theta_0 + alpha (theta - theta_0) = theta + (1 - alpha)(theta_0 - theta), and `line`
    # steps from the trained weights, so it gets 1 - alpha
    alphas = torch.linspace(lo, hi, settings["init_points"])  # 0 and 1 among them
    init_line = line(model, towards_init, 1 - alphas, images)
    init_line["alpha"] = alphas

    def progress(done: int, total: int) -> None:
        if done % n == 0:
            print(f"  {name}: grid row {done // n}/{total // n} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    axis = torch.linspace(-span, span, n)
    surface = grid(model, d1, d2, axis, axis, images, progress=progress)
    hessian = images.subset(slice(0, settings["hessian_images"]))
    lam_max, lam_min = hessian_extremes(model, hessian, iters=settings["lanczos_steps"])
    return {
        "trained": {"loss": round(at_trained["loss"], 5), "acc": round(at_trained["acc"], 5)},
        "random_line": {k: rounded(v) for k, v in random_line.items()},
        "init_line": {k: rounded(v) for k, v in init_line.items()},
        "grid": {k: rounded(v) for k, v in surface.items()},
        "local_minima": local_minima(surface["loss"]),
        "hessian": {"lam_max": round(lam_max, 5), "lam_min": round(lam_min, 5),
                    "ratio": round(abs(lam_min / lam_max), 5)},
        "seconds": round(time.perf_counter() - t0, 1),
        "weights_sha256": weights_sha256(name, weights_dir),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="the folder holding cifar-10-batches-py/")
    p.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--grid", type=int, default=21, help="points per side of the 2-D grid")
    p.add_argument("--line-points", type=int, default=41)
    p.add_argument("--hessian-images", type=int, default=500)
    p.add_argument("--lanczos", type=int, default=20, help="Lanczos steps (H v products)")
    p.add_argument("--seed", type=int, default=1, help="d1's seed; d2 uses seed + 1")
    add_arguments(p, "landscapes")
    p.add_argument("--quick", action="store_true",
                   help="the shipped sample, 64 images, a 5 x 5 grid: a check of the script")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.grid, args.line_points = 64, 5, 7
        args.hessian_images, args.lanczos = 32, 4
    check_weights(p, args.nets, args.weights_dir)
    data = load_sample() if args.quick else load_cifar10(args.data_dir)
    if not 0 < args.images <= len(data.train):
        p.error(f"--images must be in [1, {len(data.train)}], got {args.images}")
    if args.grid < 3 or args.line_points < 3 or args.lanczos < 2:
        p.error("--grid and --line-points need at least 3 points, --lanczos 2 steps")
    images = data.train.subset(slice(0, args.images))  # fixed: the same for every net
    settings = settings_of(args, len(images))
    runs, results = output_roots(args, "landscapes")
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/landscapes.py", *argv])

    def report(name: str, r: dict[str, Any]) -> str:
        h = r["hessian"]
        return (f"{name}: loss {r['trained']['loss']:.4f} at the trained weights, lam_max "
                f"{h['lam_max']:.3g}, lam_min {h['lam_min']:.3g}, |ratio| {h['ratio']:.3g}, "
                f"{r['seconds']:.0f} s")

    with LoadGuard() as guard:
        nets = measure_each(args.nets, runs, settings, command,
                            args.weights_dir,
                            lambda name: measure(name, images, settings, args.weights_dir),
                            report)
    write_results(results, "landscapes.json",
                  "loss landscapes of the trained family (Li et al. 2018), notebook 07",
                  command, settings, nets, LI_ET_AL, guard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
