"""Veit et al.'s (2016) two measurements on the trained family, for notebook 06.

    python bench/ensembles.py --data-dir data/cifar10   # four nets: tens of minutes, 2 cores
    python bench/ensembles.py --quick                   # the shipped sample: seconds

For ResNet-20, ResNet-56 and their plain twins, with the shipped trained weights
(`resnet_edu.pretrained.load_pretrained`, BatchNorm in eval mode):

- lesions (Veit et al. Sec. 4, Fig. 3 and 5a): the accuracy with each single block deleted,
  and with k random blocks deleted, `--draws` random choices of blocks per k, on the first
  `--images` test images (the same images for every net). A deleted block keeps its shortcut
  (`resnet_edu.ensembles`); a plain net's deleted block gets the same replacement;
- a control the paper does not run: each single deletion again with BatchNorm's running
  statistics re-estimated on the first `--calibration-images` training images for the net
  without that block (`recalibrated_norms`): how much of a deletion's cost is statistics the
  following blocks no longer receive;
- paths (Sec. 5, Fig. 6; residual nets only): the gradient at the first block's input carried
  by paths of each length k, `--path-draws` random choices of k blocks per length, on the first
  `--path-images` test images; the attenuation per block r fitted to it; the share of the
  gradient on each length, measured and as r alone predicts it, C(n, k) r^k / (1 + r)^n.

Every net's result is stored in `runs/ensembles/<net>.json` as soon as it is done, so running
the same command again continues where it stopped. When all nets are done it writes
`results/ensembles.json` (settings, per-net results and seconds, hardware, command, load). The
numbers do not depend on the machine's load (fixed computations, seeded draws); the seconds do.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

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

from resnet_edu.data import load_cifar10, load_sample, normalize
from resnet_edu.ensembles import (
    attenuation_per_block,
    downsampling_blocks,
    gradient_per_path_length,
    lesion_each_block,
    lesion_random_blocks,
    mean_path_length,
    predicted_gradient_share,
    residual_blocks,
    share_between,
    total_gradient_per_path_length,
)
from resnet_edu.evaluation import evaluate
from resnet_edu.pretrained import load_pretrained

NETS = ("resnet20", "plain20", "resnet56", "plain56")
VEIT_ET_AL = ("Veit et al. 2016, ResNet-110 (54 blocks) on CIFAR-10, trained fully: deleting one "
              "block other than a downsampling one changes the test error little (Fig. 3a); the "
              "error rises smoothly with the number of blocks deleted (Fig. 5a); the gradient "
              "per path falls about exponentially with its length and most of the total comes "
              "from paths of 5 to 17 blocks (10-34 layers; Fig. 6), against a typical path "
              "length of 27. VGG-15 falls to chance when any layer is deleted (Fig. 3b)")
SHORT_PATHS = (5, 17)  # Veit et al.'s "10-34 layers", in blocks of two layers


def lesion_ks(n: int, residual: bool) -> list[int]:
    """The numbers of blocks deleted at random. A residual net: every k up to 10 blocks, else
    1 to 6 and every fourth k up to 2n/3 (Veit et al. Fig. 5a delete up to 20 of 54). A plain
    net: 2 and 3, as one deletion already takes it to chance."""
    if not residual:
        return [k for k in (2, 3) if k <= n]
    if n <= 10:
        return list(range(1, n + 1))
    return [*range(1, 7), *range(8, 2 * n // 3 + 1, 4)]


def settings_of(args: argparse.Namespace, images: int, path_images: int) -> dict[str, Any]:
    return {"images": images, "draws": args.draws, "path_images": path_images,
            "calibration_images": args.calibration_images,
            "path_draws": args.path_draws, "seed": args.seed,
            "data": "sample" if args.quick else "CIFAR-10 test images",
            "weights": args.weights_dir or "shipped", "short_paths": list(SHORT_PATHS)}


def paths(model, images, settings: dict[str, Any]) -> dict[str, Any]:
    x = normalize(images.images)  # (B, 3, 32, 32)
    per_path = gradient_per_path_length(model, x, images.labels,
                                        samples=settings["path_draws"], seed=settings["seed"])
    n = len(per_path) - 1
    total = total_gradient_per_path_length(per_path)
    share = [t / sum(total) for t in total]
    r = attenuation_per_block(per_path)
    predicted = predicted_gradient_share(n, r)
    low, high = SHORT_PATHS
    return {"per_path": [float(f"{g:.5g}") for g in per_path],
            "share": [round(s, 5) for s in share], "attenuation": round(r, 4),
            "predicted_share": [round(s, 5) for s in predicted],
            "mean_length": round(mean_path_length(share), 3),
            "predicted_mean_length": round(mean_path_length(predicted), 3),
            "binomial_mean_length": n / 2,
            "share_short": round(share_between(share, low, min(high, n)), 4),
            "predicted_share_short": round(share_between(predicted, low, min(high, n)), 4)}


def measure(name: str, images, path_images, calibration, settings: dict[str, Any],
            weights_dir: str | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = load_pretrained(name, None if weights_dir is None
                            else Path(weights_dir) / f"{name}.pt")  # float32, eval, CPU
    n, residual = len(residual_blocks(model)), not name.startswith("plain")
    intact = evaluate(model, images)["acc"]
    single = lesion_each_block(model, images)
    print(f"  {name}: intact {intact:.4f}, {n} single deletions "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    recalibrated = lesion_each_block(model, images, recalibrate=calibration)
    ks = lesion_ks(n, residual)
    random_k = lesion_random_blocks(model, images, trials=settings["draws"],
                                    seed=settings["seed"], ks=ks)
    result: dict[str, Any] = {
        "blocks": n, "downsampling_blocks": downsampling_blocks(model),
        "intact_acc": round(intact, 5), "single_deletion_acc": [round(a, 5) for a in single],
        "single_deletion_acc_recalibrated": [round(a, 5) for a in recalibrated],
        "random_deletion_acc": {str(k): [round(a, 5) for a in accs]
                                for k, accs in random_k.items()},
    }
    if residual:
        print(f"  {name}: gradient per path length ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        result["paths"] = paths(model, path_images, settings)
    result.update(seconds=round(time.perf_counter() - t0, 1),
                  weights_sha256=weights_sha256(name, weights_dir))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="the folder holding cifar-10-batches-py/")
    p.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    p.add_argument("--images", type=int, default=2000, help="test images for the lesions")
    p.add_argument("--draws", type=int, default=10, help="random choices of blocks per k")
    p.add_argument("--path-images", type=int, default=128)
    p.add_argument("--path-draws", type=int, default=16,
                   help="random choices of k blocks per path length")
    p.add_argument("--calibration-images", type=int, default=1000,
                   help="training images that re-estimate BatchNorm after a deletion")
    p.add_argument("--seed", type=int, default=0)
    add_arguments(p, "ensembles")
    p.add_argument("--quick", action="store_true",
                   help="the shipped sample, 100 images, 2 draws: a check of the script")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.draws, args.path_images, args.path_draws = 100, 2, 8, 2
        args.calibration_images = 64
    check_weights(p, args.nets, args.weights_dir)
    data = load_sample() if args.quick else load_cifar10(args.data_dir)
    for flag, value, split in (("--images", args.images, data.test),
                               ("--path-images", args.path_images, data.test),
                               ("--calibration-images", args.calibration_images, data.train)):
        if not 0 < value <= len(split):
            p.error(f"{flag} must be in [1, {len(split)}], got {value}")
    if args.draws < 1 or args.path_draws < 1:
        p.error("--draws and --path-draws need at least 1")
    images = data.test.subset(slice(0, args.images))  # fixed: the same for every net
    path_images = data.test.subset(slice(0, args.path_images))
    calibration = data.train.subset(slice(0, args.calibration_images))
    settings = settings_of(args, len(images), len(path_images))
    runs, results = output_roots(args, "ensembles")
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/ensembles.py", *argv])

    def report(name: str, r: dict[str, Any]) -> str:
        one = r["single_deletion_acc"]
        line = (f"{name}: intact {r['intact_acc']:.4f}, one block deleted {min(one):.4f} to "
                f"{max(one):.4f}")
        if "paths" in r:
            line += (f", r = {r['paths']['attenuation']:.3f} per block, mean path length "
                     f"{r['paths']['mean_length']:.2f} of {r['blocks']}")
        return f"{line}, {r['seconds']:.0f} s"

    with LoadGuard() as guard:
        nets = measure_each(args.nets, runs, settings, command,
                            args.weights_dir,
                            lambda name: measure(name, images, path_images, calibration,
                                                 settings, args.weights_dir),
                            report)
    write_results(results, "ensembles.json",
                  "lesions and gradient per path length of the trained family (Veit et al. "
                  "2016), notebook 06", command, settings, nets, VEIT_ET_AL, guard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
