"""Checks for notebook 06 (why residual networks work).

    check_lag1(lag1)                      # the lag-1 autocorrelation of a gradient sweep
    check_routed_forward(routed_forward)  # a block's forward with the gradient restricted
    check_shattering_prediction(choice)   # predicted r[1] of a 50-layer plain-bn net
    check_lesion_prediction(percent)      # predicted accuracy of plain-20 minus one block
    check_path_length_prediction(blocks, r)  # where a 27-block net's gradient lies, from r
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from ..ensembles import lesion_each_block, mean_path_length, predicted_gradient_share
from ..ensembles import routed_forward as library_routed_forward
from ..models import cifar_resnet
from ..shattered import autocorrelation, fc_net, input_gradients, sweep_depths
from .exercise import (
    NotYet,
    close,
    exercise,
    judge_choice,
    judge_prediction,
    one_thread,
    require_choice,
    require_prediction,
)


class _Runs:
    """`with _Runs(code) as runs:` ... `runs.seen`: whether the function whose code object is
    `code` was called inside the block, however the student imported or named it (a profile
    hook sees every Python call of this thread)."""

    def __init__(self, code) -> None:
        self.code, self.seen, self.previous = code, False, None

    def _profile(self, frame, event, arg) -> None:
        if event == "call" and frame.f_code is self.code:
            self.seen = True

    def __enter__(self) -> _Runs:
        self.previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(self.previous)


def _sequences() -> dict[str, torch.Tensor]:
    """A smooth curve, white noise (alone and on an offset), and two gradient sweeps."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    _, shallow = input_gradients(fc_net(2, "plain-bn"))
    torch.manual_seed(0)
    _, deep = input_gradients(fc_net(24, "plain-bn"))
    return {"a sine": torch.sin(torch.linspace(0, 6.0, 256)) + 0.5,
            "white noise": torch.randn(256, generator=gen),
            "white noise on an offset of 3": torch.randn(256, generator=gen) + 3.0,
            "dy/dx of a 2-layer net": shallow, "dy/dx of a 24-layer net": deep}


def _value(lag1: Callable[[torch.Tensor], float], g: torch.Tensor) -> float:
    with _Runs(autocorrelation.__code__) as runs:
        answer = lag1(g.clone())
    if runs.seen:
        raise NotYet("your lag1 calls autocorrelation, the package's own answer: compute r[1] "
                     "from g yourself, with a centre and a denominator you choose")
    if answer is None or answer is Ellipsis:
        raise NotImplementedError
    try:
        return float(answer)
    except (TypeError, ValueError, RuntimeError):
        raise NotYet(f"lag1 should return one number (a float or a 0-d tensor), got "
                     f"{type(answer).__name__}") from None


@exercise
def check_lag1(lag1: Callable[[torch.Tensor], float]) -> str:
    """`lag1(g)`: r[1] of the 1-D tensor g, under the notebook's three rules: near 1 for a
    smooth sequence and near 0 for white noise, with or without an offset (rule 1); unchanged
    when g is scaled (rule 2); one mean and one denominator for the whole sequence, so that
    it equals `autocorrelation(g, 1)[1]` (rule 3). A wrong answer is told which rule it
    breaks, with the number the check measured."""
    for name, g in _sequences().items():
        value, expected = _value(lag1, g), float(autocorrelation(g, 1)[1])
        if close(value, expected, rel=1e-3, abs_=1e-4):
            continue
        scaled = _value(lag1, 10 * g)
        if not close(scaled, value, rel=1e-3, abs_=1e-6):
            raise NotYet(f"multiplying g by 10 changes your value from {value:.4g} to "
                         f"{scaled:.4g} (on {name}), so a deeper net's larger dy/dx would "
                         "look more (or less) correlated for its size alone: normalize, so "
                         "that r[0] = 1 (rule 2)")
        noise = _sequences()["white noise on an offset of 3"]
        on_offset = _value(lag1, noise)
        if abs(on_offset) > 0.2:
            raise NotYet(f"on white noise on an offset of 3, where neighbouring values are "
                         f"unrelated, your lag1 gives {on_offset:.2f}: the offset itself looks "
                         "like correlation. What must go before you multiply neighbours "
                         "(rule 1)?")
        pearson = float(torch.corrcoef(torch.stack([g[:-1], g[1:]]).double())[0, 1])
        n = g.numel()
        if close(value, pearson, rel=1e-3, abs_=1e-4):
            hint = ("that is the Pearson correlation of the two shifted halves g[:-1] and "
                    "g[1:], each with its own mean and spread; r[1] uses one mean and one "
                    "denominator over the whole sequence, shared by every lag (rule 3)")
        elif any(close(value, expected * f, rel=1e-4) for f in (n / (n - 1), (n - 1) / n)):
            hint = (f"off by the factor {n}/{n - 1}: you average the {n - 1} products of "
                    f"neighbours and the {n} squares over different counts; r[0] = 1 needs "
                    "one normalization for both (rule 3)")
        else:
            hint = ("it keeps rules 1 and 2 as far as the check measures them: compare your "
                    "centre and your denominator with rule 3")
        raise NotYet(f"on {name} lag1 gives {value:.4f}, r[1] is {expected:.4f}: {hint}")
    return ("r[1] matches on a sine, white noise with and without an offset, and two gradient "
            "sweeps: near 1 for smooth sequences, near 0 for white noise, whatever the scale.")


def _grads(fn: Callable, block: torch.nn.Module, x: torch.Tensor, route: str
           ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    with _Runs(library_routed_forward.__code__) as runs:
        out = fn(block, x, route)
    if runs.seen and fn is not library_routed_forward:
        raise NotYet("your function calls routed_forward, the library's own "
                     "(resnet_edu.ensembles): write yours from block.residual_branch, "
                     "block.shortcut and block.relu")
    if out is None or out is Ellipsis:  # still `...`
        raise NotImplementedError
    if not isinstance(out, torch.Tensor):
        raise NotYet(f"return the block's output as a tensor, got {type(out).__name__}")
    if not out.requires_grad:
        raise NotYet(f"route {route!r}: your output carries no gradient at all: you cut both "
                     "terms, or the output after the addition (rule 2)")
    weight = torch.linspace(-1, 1, out.numel()).reshape(out.shape)  # a fixed projection
    params = [p for p in block.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weight).sum(), [x, *params], allow_unused=True)
    return out.detach(), grads[0], [torch.zeros_like(p) if g is None else g
                                    for g, p in zip(grads[1:], params, strict=True)]


def _norm(t: torch.Tensor) -> float:
    return t.norm().item()


@exercise
def check_routed_forward(routed_forward: Callable[[torch.nn.Module, torch.Tensor, str],
                                                  torch.Tensor]) -> str:
    """`routed_forward(block, x, route)`: the output of a post-activation BasicBlock (rule 1),
    with the gradient through the residual branch only ('branch') or the skip only ('skip')
    (rule 2). A wrong decision is told what the check measured: how far the forward moved,
    or whose gradient reached x instead."""
    if routed_forward is library_routed_forward:
        raise NotYet("that is the library's own routed_forward (resnet_edu.ensembles): write "
                     "yours from block.residual_branch, block.shortcut and block.relu")
    torch.manual_seed(0)
    net = cifar_resnet(8).eval()  # 3 blocks: one identity block, two that downsample
    inp = torch.relu(torch.randn(2, 16, 32, 32))  # a block's input: the previous ReLU's output
    for block in (net.layer1[0], net.layer2[0]):
        with torch.no_grad():
            expected_out = block(inp)
        where = "an identity block" if block.stride == 1 else "a downsampling block"
        library = {r: _grads(library_routed_forward, block, inp, r)
                   for r in ("both", "branch", "skip")}
        for route in ("branch", "skip"):
            out, gx, gp = _grads(routed_forward, block, inp, route)
            if out.shape != expected_out.shape:
                raise NotYet(f"route {route!r} on {where}: your output has shape "
                             f"{tuple(out.shape)}, block(x) {tuple(expected_out.shape)}")
            if not torch.allclose(out, expected_out, atol=1e-5):
                moved = (out - expected_out).abs().max().item()
                with torch.no_grad():
                    before_relu = block.residual_branch(inp) + block.shortcut(inp)
                if torch.allclose(out, before_relu, atol=1e-5):
                    raise NotYet(f"route {route!r} on {where}: your output differs from "
                                 f"block(x) by up to {moved:.3g}: it is the sum before the "
                                 "block's last ReLU. The forward values must be block(x)'s "
                                 "(rule 1)")
                raise NotYet(f"route {route!r} on {where}: your output differs from block(x) "
                             f"by up to {moved:.3g}. Restricting the gradient must not change "
                             "any forward value (rule 1): a term dropped or zeroed is gone "
                             "from the forward pass too, which is a lesion (section 4), not "
                             "a routing")
            _, ex, ep = library[route]
            if not torch.allclose(gx, ex, atol=1e-5, rtol=1e-4):
                other = "skip" if route == "branch" else "branch"
                if _norm(gx) == 0:
                    raise NotYet(f"route {route!r} on {where}: no gradient reaches x at all "
                                 "(|dL/dx| = 0): you cut both terms, or the output after "
                                 "the addition (rule 2)")
                if torch.allclose(gx, library[other][1], atol=1e-5, rtol=1e-4):
                    raise NotYet(f"route {route!r} on {where}: the gradient that reaches x is "
                                 f"the one through the {other} (it matches route "
                                 f"{other!r}): you cut the other term (rule 2)")
                if torch.allclose(gx, library["both"][1], atol=1e-5, rtol=1e-4):
                    why = ""
                    if route == "branch" and block.downsample is None:
                        why = (" If you wrapped the shortcut in `torch.no_grad()`: on an "
                               "identity block block.shortcut(x) returns x itself, no "
                               "operation at all, so `torch.no_grad()` around it has "
                               "nothing to stop: x carries its gradient into the sum. What "
                               "returns the same values cut from the graph?")
                    raise NotYet(f"route {route!r} on {where}: the gradient still flows "
                                 f"through both terms (|dL/dx| = {_norm(gx):.3g}, the full "
                                 f"gradient's; route {route!r} gives {_norm(ex):.3g}) "
                                 f"(rule 2).{why}")
                raise NotYet(f"route {route!r} on {where}: the gradient w.r.t. x "
                             f"(|dL/dx| = {_norm(gx):.3g}) is not the one through the "
                             f"{route} only ({_norm(ex):.3g}) (rule 2)")
            if not all(torch.allclose(a, b, atol=1e-5, rtol=1e-4)
                       for a, b in zip(gp, ep, strict=True)):
                raise NotYet(f"route {route!r} on {where}: the weights' gradients differ "
                             "(with 'skip' the branch's weights get no gradient) (rule 2)")
    return ("same values as block(x), and the gradient goes only where the route says, on "
            "an identity block and on a downsampling block (option A).")


R1_CHOICES = {"near 1": 1.0, "near 0.5": 0.5, "near 0": 0.0}


@exercise
def check_shattering_prediction(choice: object, measured: float | None = None) -> str:
    """Predicted r[1] of `plain-bn` at depth 50: 'near 1', 'near 0.5' or 'near 0'.

    `measured`: the value from the notebook's sweep; without it, the check measures it (mean
    over 2 initializations; section 1 takes 4). The nearest of the three choices is right.
    """
    what = "r[1] of plain-bn at 50 layers"
    require_choice(choice, tuple(R1_CHOICES), what)  # before measuring: nothing to compare yet
    if measured is None:  # two initializations on one thread: under a second on a CPU
        with one_thread():
            measured = sweep_depths((50,), ("plain-bn",), seeds=2)["plain-bn"][0]
    right = min(R1_CHOICES, key=lambda c: abs(R1_CHOICES[c] - measured))
    return judge_choice(choice, right, tuple(R1_CHOICES), what=what,
                        why=f"(measured {measured:.2f}.) With BatchNorm, the gradient of a deep "
                            "feedforward net decorrelates from one input to the next, like "
                            "white noise (Balduzzi et al. 2017).")


@exercise
def check_lesion_prediction(percent: object, measured: list[float] | None = None) -> str:
    """Predicted test accuracy (%) of the trained plain-20 with one of its blocks deleted.

    `measured`: the accuracies per deleted block from the notebook's lesion run; without it,
    the check measures them on the first 100 test images of the shipped sample.
    """
    what = "plain-20's accuracy with one block deleted (%, mean over the nine blocks)"
    require_prediction(percent, what)
    if isinstance(percent, (int, float)) and not isinstance(percent, bool) and 0 < percent < 1:
        raise NotYet(f"the prediction is asked in percent (chance is 10 %), and you wrote "
                     f"{percent:g}: did you mean {100 * percent:g} %? Write "
                     f"{100 * percent:g}, not a fraction")
    if measured is None:
        from ..data import load_sample
        from ..pretrained import load_pretrained

        measured = lesion_each_block(load_pretrained("plain20"),
                                     load_sample().test.subset(slice(0, 100)))
    mean = 100 * sum(measured) / len(measured)
    return judge_prediction(percent, mean, rel=0.3, what=what,
                            why="A plain net is one chain: every path runs through every block, "
                                "so removing any one block breaks them all.")


@exercise
def check_path_length_prediction(blocks: object, r: float, n: int = 27,
                                 measured: float | None = None) -> str:
    """Predicted mean length (in blocks) of the paths that carry the gradient of an n-block
    net (ResNet-56: 27) whose every branch scales the gradient per path by `r`, the
    attenuation fitted on ResNet-20. `measured`: the mean measured in ResNet-56, if known.
    """
    what = f"the mean path length of the gradient in a {n}-block net (blocks)"
    require_prediction(blocks, what)
    if not (isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0):
        raise NotYet(f"r should be the positive attenuation per block you fitted, got {r!r}")
    predicted = mean_path_length(predicted_gradient_share(n, r))  # = n r / (1 + r)
    why = (f"Paths of length k carry C({n}, k) r^k of the gradient: a Binomial({n}, r/(1+r)), "
           f"whose mean is {n} r/(1+r), the same fraction r/(1+r) = {r / (1 + r):.2f} of "
           "the depth as in ResNet-20; more blocks do not move it toward the short paths.")
    if measured is not None:
        why += f" Measured in ResNet-56: {measured:.1f} blocks."
    return judge_prediction(blocks, predicted, rel=0.1, what=what, why=why)
