"""Small trained CIFAR-10 nets that ship with the package (notebook 06).

    model = load_pretrained("resnet20")          # ResNet-20, trained weights, eval mode
    manifest()["resnet20"]["how_made"]           # command, hardware, time, accuracy

The weights are fp16 state_dicts in `resnet_edu/shipped/weights/`, written by the scripts in
`bench/` together with `manifest.json` beside them (sha256, builder call, how each file was
made), and shipped as package data (`resnet_edu.locations`). Loading
reads with `torch.load(..., weights_only=True)` after checking the sha256, so a truncated,
damaged or replaced file is refused with a sentence, not loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import CheckpointError, load_weights
from .locations import shipped
from .models import CifarResNet, cifar_resnet
from .recipe import TrainConfig
from .runtime import seed_everything

# name -> the keyword arguments of `cifar_resnet` that build the net (He et al. 2015/2016)
NETS: dict[str, dict[str, Any]] = {
    "resnet20": {"depth": 20, "residual": True},  # 9 BasicBlocks, option-A shortcuts
    "plain20": {"depth": 20, "residual": False},  # the same 19 conv layers, no shortcuts
    "preact20": {"depth": 20, "residual": True, "preact": True},  # PreActBlocks (2016)
}
# the family `bench/train_family.py` trains with one recipe and equal epochs: NETS and the
# 56-layer pair (27 BasicBlocks) of He et al.'s Fig. 6
FAMILY: dict[str, dict[str, Any]] = {
    **NETS,
    "resnet56": {"depth": 56, "residual": True},
    "plain56": {"depth": 56, "residual": False},
}
MANIFEST = "manifest.json"
# how the figures and the prose name them (He et al.'s spelling)
DISPLAY_NAMES = {"resnet20": "ResNet-20", "plain20": "plain-20", "preact20": "pre-act ResNet-20",
                 "resnet56": "ResNet-56", "plain56": "plain-56"}


def small_nets_recipe(epochs: int = 3, train_subset: int | None = 15000, amp: str = "auto"
                      ) -> TrainConfig:
    """The recipe the shipped nets were trained with: He et al. 2015, Sec. 4.2 (SGD, momentum
    0.9, weight decay 1e-4, batch 128, peak lr 0.1, crop + flip), with a 5 % warm-up and a
    cosine decay instead of the paper's steps at 32k and 48k of 64k iterations, so that a
    run of a few epochs still ends at a small learning rate. The shipped nets: 3 epochs on the
    first 15,000 training images, float32 (`bench/train_small_nets.py`)."""
    return TrainConfig(
        name="small-nets", width=16, epochs=epochs, batch_size=128, lr=0.1, schedule="cosine",
        warmup=0.05, momentum=0.9, nesterov=False, weight_decay=1e-4, label_smoothing=0.0,
        padding=4, flip=True, cutout=0, min_resolution=32, full_resolution_epochs=1,
        train_subset=train_subset, tta=False, amp=amp, channels_last=False, seed=0)


def family_recipe(epochs: int = 15) -> TrainConfig:
    """The one recipe of the family (`bench/train_family.py`): the package's one-cycle SGD
    (batch 128, peak lr 0.2 after a 15 % warm-up, Nesterov momentum 0.9, weight decay 5e-4 on
    conv and linear weights), crop + flip, full 32-pixel crops throughout, float32 on every
    machine, no label smoothing (it would blur the train-error comparison). He et al. 2015
    train for 164 epochs with steps at 32k and 48k iterations; this recipe trains far fewer,
    so a one-cycle schedule ends them at a small learning rate."""
    return TrainConfig(
        name="family", width=16, epochs=epochs, batch_size=128, lr=0.2, schedule="onecycle",
        warmup=0.15, momentum=0.9, nesterov=True, weight_decay=5e-4, label_smoothing=0.0,
        padding=4, flip=True, cutout=0, min_resolution=32, full_resolution_epochs=1,
        eval_batch_size=1000, tta=False, amp="off", channels_last=True, seed=0,
        # the family builds its own nets (`build`, He et al.'s initialisation); the recipe's
        # zero-init of the last BN in each block (`build_model`) is not applied to them
        zero_init_residual=False)


def check_name(name: object) -> str:
    if name not in FAMILY:
        raise ValueError(f"name must be one of {sorted(FAMILY)}, got {name!r}")
    return name  # type: ignore[return-value]


def build(name: str) -> CifarResNet:
    """The untrained net `name` (the architecture the shipped weights belong to)."""
    return cifar_resnet(**FAMILY[check_name(name)])


def initial(name: str, seed: int | None = None) -> CifarResNet:
    """Net `name` with the weights its family run starts from: built right after seeding with
    the family recipe's seed, as `bench/train_family.py` builds it. The start of Goodfellow
    et al.'s (2015) line from the initial to the trained weights (`resnet_edu.landscape`)."""
    seed_everything(family_recipe().seed if seed is None else seed)
    return build(name)


def weights_dir() -> Path:
    """The folder of the shipped weights, `resnet_edu/shipped/weights/`."""
    return shipped("weights")


def manifest(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The manifest: per net, its file, sha256, builder arguments and "how it was made"."""
    path = Path(folder or weights_dir()) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no weights manifest at {path}: the shipped weights are "
                                "missing; reinstall the package, or run "
                                "bench/train_small_nets.py in a checkout")
    return json.loads(path.read_text())


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_weights(path: str | Path, expected_sha256: str | None = None
                 ) -> dict[str, torch.Tensor]:
    """A state_dict read with `weights_only=True`, after checking its sha256 if given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}; reinstall the package, or train "
                              "the nets yourself (bench/train_small_nets.py)")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise CheckpointError(f"{path} is damaged or not the shipped file: its sha256 is "
                              f"{sha256(path)[:12]}..., the manifest expects "
                              f"{expected_sha256[:12]}...; reinstall the package")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types; a sentence says what happened
        raise CheckpointError(f"{path} does not read as a PyTorch state_dict "
                              f"({type(e).__name__}); use an intact copy") from None
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor)
                                            for v in state.values())):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def load_pretrained(name: str, path: str | Path | None = None) -> nn.Module:
    """Net `name` with trained weights, as float32, in eval mode, on the CPU.

    Without `path`: the shipped weights, checked against the manifest's sha256. With `path`:
    a state_dict file you wrote yourself (e.g. `torch.save(model.state_dict(), path)` after
    training with `bench/train_small_nets.py` or `resnet_edu.train.fit`); no checksum then.
    """
    model = build(name)
    if path is None:
        shipped_nets = manifest()
        if name not in shipped_nets:
            raise CheckpointError(f"no shipped weights for {name!r} yet (shipped: "
                                  f"{sorted(shipped_nets)}); train them with "
                                  "bench/train_family.py and pass the file as `path`")
        entry = shipped_nets[name]
        path = weights_dir() / entry["file"]
        state = read_weights(path, entry["sha256"])
    else:
        state = read_weights(path)
    load_weights(model, {k: v.float() if v.is_floating_point() else v
                         for k, v in state.items()}, path)
    return model.eval()
