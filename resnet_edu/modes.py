"""Train or eval mode for a while, and every module's own mode put back afterwards.

    with mode(model, train=False):     # BatchNorm uses its running statistics here
        logits = model(x)
    # every module is in the mode it had before, even after an error inside the block

`model.train(flag)` sets one flag on *every* submodule, so the usual "remember
`model.training`, restore it with `model.train(old)`" loses a mix of modes: a training net
whose BatchNorms were frozen in eval mode comes back with all of them training. This saves
each module's flag and restores each one, in a `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def mode(model: nn.Module, train: bool) -> Iterator[nn.Module]:
    """`model` with every module in train (`train=True`) or eval mode inside the block; on
    leaving, each module gets back its own previous mode."""
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False, got {train!r}")
    saved = [(module, module.training) for module in model.modules()]
    model.train(train)
    try:
        yield model
    finally:
        for module, was_training in saved:
            module.training = was_training
