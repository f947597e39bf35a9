"""Checks for notebook 04 (training ResNet-18 on CIFAR-10). The trainer's rules are the oracle."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..recipe import TrainConfig, lr_at, param_groups
from . import NotYet, close, exercise


def _small_model() -> nn.Module:
    from ..models import resnet18_cifar

    return resnet18_cifar(width=4)


@exercise
def check_split_parameters(fn: Callable[[nn.Module], tuple[list, list]]) -> str:
    """Exercise 1: `fn(model)` -> (decayed, not_decayed) parameter lists, as `param_groups`."""
    model = _small_model()
    result = fn(model)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise NotYet(f"return a pair (decayed, not_decayed), got {type(result).__name__}")
    decay, no_decay = (list(r) for r in result)
    expected_decay, expected_no = (g["params"] for g in param_groups(model, 1.0))
    names = {id(p): n for n, p in model.named_parameters()}
    if any(not isinstance(p, nn.Parameter) for p in decay + no_decay):
        raise NotYet("both lists should hold the model's parameters (nn.Parameter objects)")
    given = {id(p) for p in decay} | {id(p) for p in no_decay}
    missing = [names[id(p)] for p in model.parameters() if id(p) not in given]
    if missing:
        raise NotYet(f"{len(missing)} parameters are in neither list, e.g. {missing[0]}: "
                     "every parameter must go somewhere")
    wrong = [names[id(p)] for p in decay if id(p) not in {id(q) for q in expected_decay}]
    if wrong:
        raise NotYet(f"{wrong[0]} (shape {tuple(dict(model.named_parameters())[wrong[0]].shape)}) "
                     "should not be decayed: BN scales/shifts and biases are 1-D")
    wrong = [names[id(p)] for p in no_decay if id(p) not in {id(q) for q in expected_no}]
    if wrong:
        raise NotYet(f"{wrong[0]} is a conv or linear weight: it should be decayed")
    return (f"{len(decay)} weight tensors decayed, {len(no_decay)} BN/bias tensors not, "
            "as the trainer does.")


@exercise
def check_one_cycle(fn: Callable[[int, int, float, float], float]) -> str:
    """Exercise 2: `fn(step, total_steps, peak_lr, warmup_fraction)` -> the one-cycle lr."""
    cases = [(100, 0.4, 0.2), (37, 0.1, 0.25), (10, 1.0, 0.0), (250, 0.05, 0.5)]
    for total, peak, warmup in cases:
        config = TrainConfig(lr=peak, warmup=warmup, schedule="onecycle")
        for step in range(total):
            want = lr_at(step, total, config)
            got = fn(step, total, peak, warmup)
            if not isinstance(got, (int, float)) and not torch.is_tensor(got):
                raise NotYet(f"return a number, got {type(got).__name__}")
            if not close(float(got), want, rel=1e-6, abs_=1e-9):
                phase = "warm-up" if step < round(warmup * total) else "decay"
                raise NotYet(f"at step {step} of {total} (peak {peak}, warm-up fraction "
                             f"{warmup}, in the {phase}) the lr should be {want:.5g}, "
                             f"got {float(got):.5g}")
    return "your schedule matches the trainer's one-cycle rule at every step."
