"""Checks for notebook 06 (why residual networks work).

    check_lag1(lag1)                      # the lag-1 autocorrelation of a gradient sweep
    check_routed_forward(routed_forward)  # a block's forward with the gradient restricted
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..ensembles import routed_forward as library_routed_forward
from ..models import cifar_resnet
from ..shattered import autocorrelation, fc_net, input_gradients
from . import NotYet, close, exercise


def _sequences() -> dict[str, torch.Tensor]:
    """A smooth curve, white noise, and two gradient sweeps (shallow and shattered)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    _, shallow = input_gradients(fc_net(2, "plain-bn"))
    torch.manual_seed(0)
    _, deep = input_gradients(fc_net(24, "plain-bn"))
    return {"a sine": torch.sin(torch.linspace(0, 6.0, 256)) + 0.5,
            "white noise": torch.randn(256, generator=gen),
            "dy/dx of a 2-layer net": shallow, "dy/dx of a 24-layer net": deep}


@exercise
def check_lag1(lag1: Callable[[torch.Tensor], float]) -> str:
    """`lag1(g)` is the normalized autocorrelation of the 1-D tensor g at lag 1."""
    for name, g in _sequences().items():
        answer = lag1(g.clone())
        if answer is None or answer is Ellipsis:
            raise NotImplementedError
        expected = float(autocorrelation(g, 1)[1])
        value = float(answer)
        if not close(value, expected, rel=1e-3, abs_=1e-4):
            hint = ""
            if close(value, float((g[:-1] * g[1:]).sum() / (g * g).sum()), rel=1e-3):
                hint = " (subtract the mean of g first)"
            elif abs(value) > 1:
                hint = " (divide by the sum of squared deviations, so that lag 0 gives 1)"
            raise NotYet(f"on {name} lag1 gives {value:.4f}, expected {expected:.4f}{hint}")
    return ("r[1] matches on a sine, white noise and two gradient sweeps: near 1 for smooth "
            "sequences, near 0 for white noise.")


def _grads(fn: Callable, block: torch.nn.Module, x: torch.Tensor, route: str
           ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    out = fn(block, x, route)
    if out is None or out is Ellipsis:  # still `...`
        raise NotImplementedError
    weight = torch.linspace(-1, 1, out.numel()).reshape(out.shape)  # a fixed projection
    params = [p for p in block.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * weight).sum(), [x, *params], allow_unused=True)
    return out.detach(), grads[0], [torch.zeros_like(p) if g is None else g
                                    for g, p in zip(grads[1:], params, strict=True)]


@exercise
def check_routed_forward(routed_forward: Callable[[torch.nn.Module, torch.Tensor, str],
                                                  torch.Tensor]) -> str:
    """`routed_forward(block, x, route)`: the output of a post-activation BasicBlock, with
    the gradient through the residual branch only ('branch') or the skip only ('skip')."""
    torch.manual_seed(0)
    net = cifar_resnet(8).eval()  # 3 blocks: one identity block, two that downsample
    inp = torch.relu(torch.randn(2, 16, 32, 32))  # a block's input: the previous ReLU's output
    for block in (net.layer1[0], net.layer2[0]):
        with torch.no_grad():
            expected_out = block(inp)
        for route in ("branch", "skip"):
            out, gx, gp = _grads(routed_forward, block, inp, route)
            where = "an identity block" if block.stride == 1 else "a downsampling block"
            if out.shape != expected_out.shape or not torch.allclose(out, expected_out,
                                                                     atol=1e-5):
                raise NotYet(f"route {route!r} on {where}: the output differs from block(x); "
                             "restricting the gradient must not change the forward values "
                             "(detach one term, keep its value)")
            _, ex, ep = _grads(library_routed_forward, block, inp, route)
            if not torch.allclose(gx, ex, atol=1e-5, rtol=1e-4):
                other = "skip" if route == "branch" else "residual branch"
                raise NotYet(f"route {route!r} on {where}: the gradient w.r.t. x is not the "
                             f"one through the {route} only; detach the {other}'s term")
            if not all(torch.allclose(a, b, atol=1e-5, rtol=1e-4)
                       for a, b in zip(gp, ep, strict=True)):
                raise NotYet(f"route {route!r} on {where}: the weights' gradients differ "
                             "(with 'skip' the branch's weights get no gradient)")
    return ("same values as block(x), and the gradient goes only where the route says, on "
            "an identity block and on a downsampling block (option A).")
