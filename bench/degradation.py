"""Regenerate the degradation results (He et al. 2015, Fig. 1 and Fig. 6 left, CIFAR-10).

Trains plain-20, plain-56, ResNet-20 and ResNet-56 with one recipe, records train and test
error after every epoch, prints the time per epoch of each net on this hardware, and writes
one JSON file with the histories, the exact command and the hardware:

    python bench/degradation.py                        # the full recipe (use a GPU)
    python bench/degradation.py --epochs 5 --train-subset 3840 --batch-size 64 --lr 0.05 \
        --test-subset 1000 --threads 1 \
        --out resnet_edu/shipped/results/degradation_cpu.json   # the stored CPU run

The paper trains for 164 epochs (64k iterations at batch 128) with lr 0.1, divided by 10 at
32k and 48k iterations, weight decay 1e-4, momentum 0.9, crop + flip augmentation. The
recipe here keeps the momentum, weight decay and augmentation (and by default the batch size
and peak lr; the stored CPU run halves both, to take more steps), and replaces the step
schedule by a warm-up + cosine decay so that a short run still ends at a small learning rate.
`--quick` runs a tiny version on the shipped sample (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from resnet_edu.data import Cifar10, data_label, load_cifar10, load_sample, normalize
from resnet_edu.gradients import gradient_norms
from resnet_edu.locations import RESULTS_DIR
from resnet_edu.models import cifar_resnet, count_parameters
from resnet_edu.recipe import TrainConfig
from resnet_edu.runtime import default_device, environment_report, seed_everything
from resnet_edu.train import fit

NETS = {"plain-20": (20, False), "plain-56": (56, False),
        "ResNet-20": (20, True), "ResNet-56": (56, True)}
# He et al. 2015, Table 6 (CIFAR-10 test error, %, 164 epochs); plain nets are only plotted
PAPER_TEST_ERROR = {"ResNet-20": 8.75, "ResNet-56": 6.97}


def degradation_config(epochs: int, train_subset: int | None, quick: bool,
                       batch_size: int = 128, lr: float = 0.1) -> TrainConfig:
    """The paper's CIFAR recipe (Sec. 4.2) on a short warm-up + cosine schedule."""
    return TrainConfig(
        name="degradation-quick" if quick else "degradation", width=16, epochs=epochs,
        batch_size=batch_size, lr=lr, schedule="cosine", warmup=0.05 if epochs > 2 else 0.2,
        momentum=0.9, nesterov=False, weight_decay=1e-4, label_smoothing=0.0, padding=4,
        flip=True, cutout=0, min_resolution=32, full_resolution_epochs=1,
        train_subset=train_subset, tta=False, amp="auto", channels_last=False, seed=0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=164)
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on the first N images of the (shuffled) training split")
    parser.add_argument("--test-subset", type=int, default=None,
                        help="evaluate on the first N test images (default: all 10,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a CPU shared with other jobs)")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--quick", action="store_true", help="tiny run on the shipped sample")
    parser.add_argument("--out", default=str(RESULTS_DIR / "degradation.json"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    data = load_sample() if args.quick else load_cifar10()
    if args.test_subset is not None:
        data = Cifar10(data.train, data.val, data.test.subset(slice(0, args.test_subset)),
                       data.source)
    config = degradation_config(args.epochs, args.train_subset, args.quick, args.batch_size,
                                args.lr)
    device = default_device()
    n_train = len(data.train) if args.train_subset is None else min(args.train_subset,
                                                                    len(data.train))
    steps_per_epoch = n_train // config.batch_size
    env = environment_report()
    print(f"{env['device_name']}, torch {env['torch']}, {torch.get_num_threads()} threads")
    # a fixed batch on which to record per-layer gradient norms at init and after each epoch
    probe = data.train.subset(slice(0, 32))
    probe_x, probe_y = normalize(probe.images).to(device), probe.labels.to(device)
    results = {}
    for name in args.nets:
        depth, residual = NETS[name]
        seed_everything(config.seed)
        model: nn.Module = cifar_resnet(depth, residual=residual)
        model.to(device)
        norms = [gradient_norms(model, probe_x, probe_y, activations=True).records()]
        steps = [0]

        def record_norms(history, model=model, norms=norms, steps=steps) -> None:
            norms.append(gradient_norms(model, probe_x, probe_y, activations=True).records())
            steps.append(len(history.epochs) * steps_per_epoch)

        t0 = time.perf_counter()
        history = fit(model, data, config, device=device, eval_splits=("test",),
                      progress=False, verbose=True, callbacks=[record_norms])
        per_epoch = [e["epoch_time_s"] for e in history.epochs]
        print(f"{name}: {sum(per_epoch) / len(per_epoch):.1f} s per training epoch "
              f"({len(data.train) if config.train_subset is None else config.train_subset} "
              f"images), {time.perf_counter() - t0:.0f} s in all", flush=True)
        results[name] = {
            "depth": depth, "residual": residual, "parameters": count_parameters(model),
            "train_error": [1 - e["train_acc"] for e in history.epochs],
            "test_error": [1 - e["test_acc"] for e in history.epochs],
            "epoch_time_s": per_epoch,
            "gradient_norms": {"steps": steps, "tables": norms},
        }
    out = {
        "experiment": "degradation (He et al. 2015, Fig. 1 / Fig. 6 left)",
        "command": "python " + " ".join(shlex.quote(a) for a in ["bench/degradation.py",
                                                                  *sys.argv[1:]]),
        "hardware": f"{env['device_name']} on a machine with {os.cpu_count()} CPU cores"
        if device.type == "cpu" else env["device_name"],
        "environment": env,
        "data": {"train_images": len(data.train) if config.train_subset is None
                 else min(config.train_subset, len(data.train)),
                 "test_images": len(data.test), "source": data_label(data)},
        "config": config.to_dict(),
        "train_error_note": "running error on the augmented training batches of each epoch",
        "paper_test_error_percent": PAPER_TEST_ERROR,
        "nets": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    for name, r in results.items():
        print(f"{name:<10} final train error {100 * r['train_error'][-1]:5.2f}%  "
              f"test error {100 * r['test_error'][-1]:5.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
