"""Softmax in forward + CrossEntropyLoss vs logits + CrossEntropyLoss, on the CIFAR-10 sample.

The same small ResNet (`resnet_edu.course.suspects.TinyResNet`, widths 16/32/64), the same
seed and the same recipe (`resnet_edu.train.fit`, the "smoke" preset without label
smoothing); the only difference is `SoftmaxResNet`'s `softmax` at the end of `forward`. Writes
resnet_edu/shipped/results/softmax_vs_ce.json, which notebook 05 plots.

    python bench/softmax_vs_ce.py [--epochs 10] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from resnet_edu.course import suspects
from resnet_edu.data import load_sample
from resnet_edu.evaluation import evaluate
from resnet_edu.locations import RESULTS_DIR
from resnet_edu.recipe import preset
from resnet_edu.runtime import default_device, environment_report, seed_everything
from resnet_edu.train import fit

OUT = RESULTS_DIR / "softmax_vs_ce.json"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    device = default_device()
    data = load_sample()
    config = preset("smoke", epochs=args.epochs, train_subset=None, label_smoothing=0.0,
                    channels_last=False)
    runs = []
    for seed in args.seeds:
        for name, cls in (("logits + CE", suspects.TinyResNet),
                          ("softmax + CE", suspects.SoftmaxResNet)):
            seed_everything(seed)
            model = cls(suspects.GoodBlock, widths=(16, 32, 64))
            start = time.perf_counter()
            history = fit(model, data, config, device=device, progress=False, verbose=False)
            test = evaluate(model, data.test, device=device)
            runs.append({"model": name, "seed": seed,
                         "train_loss": history.column("train_loss"),
                         "val_acc": history.column("val_acc"), "test_acc": test["acc"],
                         "seconds": round(time.perf_counter() - start, 1)})
            print(f"{name:<13} seed {seed}: test accuracy {test['acc']:.3f}", flush=True)
    result = {
        "command": "python bench/softmax_vs_ce.py " + " ".join(argv),
        "data": "CIFAR-10 sample (1,800 train / 200 val / 1,000 test images)",
        "config": config.to_dict(),
        "environment": environment_report(),
        "runs": runs,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"wrote {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
