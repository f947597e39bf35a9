"""Checks for notebook 01, the residual formula.

Each check runs the student's answer on its own small, seeded example and compares it with
an oracle computed at check time: the block itself, the parameters of a built ResNet-18,
autograd, the measured gains of a linear stack, or the expectation in `resnet_edu.stacks`.
A wrong answer is compared with the usual slips, so that the hint can name the one that was
made. The global random state is left as it was.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from ..blocks import BasicBlock, PreActBlock
from ..models import resnet18
from ..stacks import LinearStack, expected_rms_gain, jacobian_gains
from .exercise import NotYet, close, exercise, judge_choice, nontrivial_batchnorms, returned_none


def _seeded_preact_block(channels: int = 8) -> PreActBlock:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        block = PreActBlock(channels, channels).double().eval()
        nontrivial_batchnorms(block, spread=0.2, running_var=False)  # so that F(x) != 0
    return block


@exercise
def check_make_identity(make_identity: Callable[[PreActBlock], object]) -> str:
    """Exercise 1: change one layer of a PreActBlock so that block(x) == x for every x."""
    block = _seeded_preact_block()
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        x = torch.randn(4, 8, 6, 6, dtype=torch.float64) * 3  # both signs, several scales
    modules = dict(block.named_modules())
    try:
        returned = make_identity(block)
    except RuntimeError as e:
        if isinstance(e, NotImplementedError) or "leaf Variable that requires grad" not in str(e):
            raise
        raise NotYet("autograd refuses to change a weight that requires a gradient in place "
                     "while it records operations: make the change under torch.no_grad() "
                     "(torch.nn.init.zeros_ does that for you), and leave requires_grad as "
                     "it is") from None
    params = dict(block.named_parameters())
    tensors = params | {n: b for n, b in block.named_buffers() if b.is_floating_point()}
    floats = sorted(n for n, t in tensors.items() if t.dtype != torch.float64)
    if floats:
        raise NotYet(f"{floats[0]} is now {tensors[floats[0]].dtype}, but the block runs in "
                     "float64 (double precision, so that block(x) == x can be checked to "
                     "1e-12): change the existing weight in place (torch.nn.init.zeros_ or "
                     ".zero_() under torch.no_grad()), or make the new tensor with "
                     "torch.zeros_like(weight), which keeps its dtype")
    replaced = sorted(n for n, m in modules.items()
                      if n and dict(block.named_modules()).get(n) is not m)
    changed = sorted(n for n, p in params.items()
                     if n not in before or p.shape != before[n].shape
                     or not torch.equal(p.detach(), before[n]))
    with torch.no_grad():
        y, f = block(x), block.residual_branch(x)
    if replaced and not torch.allclose(y, x, rtol=0, atol=1e-12):
        new = type(dict(block.named_modules()).get(replaced[0])).__name__
        raise NotYet(f"you replaced block.{replaced[0]} by a new module ({new}): that changes "
                     "what F computes, but F(x) is still not zero (max |F(x)| = "
                     f"{f.abs().max().item():.2g}). Keep the block's layers and change one "
                     "layer's parameters in place instead, e.g. torch.nn.init.zeros_ on its "
                     "weight")
    if not changed and not replaced and isinstance(returned, torch.nn.Module):
        raise NotYet(f"your function returns a module ({type(returned).__name__}), but the "
                     "block it was given is unchanged: the check uses that block, so change "
                     "one of its layers in place (what make_identity returns is not used)")
    if not changed and not replaced:
        raise NotYet("the block is unchanged, so block(x) = x + F(x) with F(x) != 0. Which "
                     "single layer of F (see `block.residual_branch`), set to zero, makes "
                     "F(x) = 0 for every x?")
    layers = {n.rsplit(".", 1)[0] for n in changed} | set(replaced)
    if len(layers) > 1:
        raise NotYet(f"you changed {len(layers)} layers ({', '.join(sorted(layers))}); one is "
                     "enough, and the others should keep their values so they can still learn")
    if not torch.allclose(y, x, rtol=0, atol=1e-12):
        layer = layers.pop()
        if isinstance(modules.get(layer), torch.nn.BatchNorm2d):
            why = ("Zeroing a layer's weight does not always zero its output: what does a "
                   "BatchNorm with zero weight still add?")
        else:
            why = (f"{layer} now outputs 0, but the layers after it need not map 0 to 0: "
                   "follow a zero through them (what does a BatchNorm add to its input?)")
        raise NotYet(f"you changed {layer}, but F(x) is still not zero (max |F(x)| = "
                     f"{f.abs().max().item():.2g}). {why}")
    layer = layers.pop()
    frozen = sorted(n for n, p in block.named_parameters() if not p.requires_grad)
    if frozen:
        raise NotYet(f"{frozen[0]} no longer requires a gradient, so training could never "
                     "change it again; change the values of a layer's parameters and leave "
                     "requires_grad alone")
    if not _branch_can_learn(block, x):
        raise NotYet(f"with {layer} changed the block is the identity, but no weight of F "
                     "gets a gradient any more, so training can never grow the branch again. "
                     "Follow the gradient back from F's output: what is the derivative of a "
                     "ReLU whose input is 0 (or below)?")
    return (f"with {layer} zeroed, F(x) = 0 and the block is exactly the identity, and "
            "the layer you zeroed still gets a gradient, so training can grow F again. This "
            "is the 'easy default' of He et al. 2015: a block that is not needed can learn "
            "to vanish.")


def _branch_can_learn(block: PreActBlock, x: torch.Tensor) -> bool:
    """Whether some parameter of F gets a nonzero gradient from a random loss on F(x)."""
    params = list(block.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        f = block.residual_branch(x)
        g = torch.randn_like(f)
    if not f.requires_grad:  # F's output no longer depends on any parameter
        return False
    grads = torch.autograd.grad(f, params, grad_outputs=g, allow_unused=True)
    return any(gr is not None and gr.abs().max().item() > 0 for gr in grads)


def _projection(block: BasicBlock) -> int:
    """What a projection shortcut on this block holds: a 1x1 conv without bias, a BatchNorm."""
    return block.inplanes * block.planes + 2 * block.planes


@exercise
def check_shortcut_parameters(total: object) -> str:
    """Exercise 3: how many parameters do all the shortcuts of ResNet-18 hold together?"""
    if total is Ellipsis:
        raise NotYet("fill in resnet18_shortcuts with a number (replace the `...`)")
    if isinstance(total, torch.Tensor) and total.numel() == 1 and not total.is_floating_point():
        total = total.item()
    if isinstance(total, bool) or not isinstance(total, numbers.Integral):
        raise NotYet(f"resnet18_shortcuts should be a whole number of parameters, got {total!r}")
    total = int(total)
    with torch.random.fork_rng(devices=[]):  # building the net draws its initial weights
        model = resnet18()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    projecting = [b for b in blocks if b.downsample is not None]
    want = sum(p.numel() for b in projecting for p in b.downsample.parameters())  # the oracle
    if total == want:
        share = want / sum(p.numel() for p in model.parameters())
        return (f"{want:,} parameters in {len(projecting)} projections, {share:.1%} of the "
                "net; every other shortcut is the identity and costs nothing. Shortcuts never "
                "reduce the parameter count, and no weights are shared between blocks.")
    # the usual slips, each counted on the model itself
    first_blocks = [getattr(model, f"layer{i}")[0] for i in range(1, 5)]
    every_block = {sum(_projection(b) for b in blocks),  # a projection in every block
                   sum(_projection(b) for b in blocks if b.planes > 64)}  # in layer2 to layer4
    if total == _projection(projecting[0]):
        raise NotYet(f"{total:,} is one projection (64 -> 128 channels, at the start of "
                     "layer2). Which other blocks of ResNet-18 change the shape?")
    if total == sum(b.inplanes * b.planes for b in projecting):
        raise NotYet("the 1x1 convolutions are right, but each projection is followed by a "
                     "BatchNorm with a weight and a bias per output channel")
    if total == sum(_projection(b) for b in first_blocks):
        raise NotYet("layer1's first block keeps 64 channels at stride 1, so its shortcut "
                     "is the identity: ResNet-18 projects only where a stage starts with "
                     "stride 2 and more channels")
    if total == want + sum(2 * b.planes for b in projecting):
        raise NotYet("you counted each BatchNorm's running mean and variance too: those are "
                     "buffers, statistics it keeps, not parameters that training learns; "
                     "count_parameters and model.parameters() leave them out")
    if total == want + sum(b.planes for b in projecting):
        raise NotYet("the 1x1 convolutions of the shortcuts have no bias (bias=False: the "
                     "BatchNorm after each one would cancel it)")
    if total in every_block:
        raise NotYet("only the first block of layer2, layer3 and layer4 changes the shape; "
                     "the other blocks add x itself, which needs no weights")
    raise NotYet(f"resnet18_shortcuts = {total:,}. Find the blocks whose output shape differs "
                 "from their input (print(resnet18()) shows them); each projection is a 1x1 "
                 "conv (in x out weights, no bias) and a BatchNorm(out)")


def _wrong_gradients(weights: list[torch.Tensor], g_top: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The usual slips, so the check can say which one was made."""
    eye = torch.eye(len(g_top), dtype=g_top.dtype)
    plain, no_transpose, wrong_order = g_top, g_top, g_top
    for w in reversed(weights):
        plain = w.T @ plain
        no_transpose = (eye + w) @ no_transpose
    for w in weights:
        wrong_order = (eye + w).T @ wrong_order
    return {"plain": plain, "no_transpose": no_transpose, "wrong_order": wrong_order}


@exercise
def check_predict_gradient(
    predict: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]) -> str:
    """Exercise 4: dE/dx_0 of x_{i+1} = x_i + W_i x_i, given dE/dx_L, without autograd."""
    stack = LinearStack(width=5, depth=4, scale=0.8, seed=7).build(residual=True)
    weights = [block.weight.detach().clone() for block in stack]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        x0 = torch.randn(5, dtype=torch.float64, requires_grad=True)
        g_top = torch.randn(5, dtype=torch.float64)
    x_top = stack(x0.unsqueeze(0)).squeeze(0)  # (5,)
    (want,) = torch.autograd.grad(x_top, x0, grad_outputs=g_top)  # the oracle: autograd
    got = predict([w.clone() for w in weights], g_top.clone())
    if not isinstance(got, torch.Tensor):
        raise NotYet(f"return a tensor of shape (5,), got {type(got).__name__}")
    if got.shape != want.shape:
        raise NotYet(f"return a tensor of shape {tuple(want.shape)} (like g_L), got "
                     f"{tuple(got.shape)}")
    got = got.detach().to(torch.float64)
    if torch.allclose(got, want, rtol=1e-6, atol=1e-9):
        return ("your gradient matches autograd: g_l = (I + W_l)^T ... (I + W_{L-1})^T g_L, "
                "whose expansion starts with g_L itself, the term no layer can block.")
    hints = {
        "plain": "that is the plain stack's gradient, W^T ... W^T g_L: the identity term is "
                 "missing (each block's Jacobian is I + W_i)",
        "no_transpose": "the chain rule multiplies by the Jacobian *transposed*: "
                        "(I + W_i)^T, not (I + W_i)",
        "wrong_order": "right factors, wrong order: the gradient meets the last block "
                       "first, so start from W_{L-1}",
    }
    for name, wrong in _wrong_gradients(weights, g_top).items():
        if torch.allclose(got, wrong, rtol=1e-6, atol=1e-9):
            raise NotYet(hints[name])
    if torch.allclose(got, g_top, rtol=1e-6, atol=1e-9):
        raise NotYet("that is g_L itself, only the term that skips every block: the blocks' "
                     "W_i add their own terms on the way down")
    first_order = g_top + sum(w.T @ g_top for w in weights)
    if torch.allclose(got, first_order, rtol=1e-6, atol=1e-9):
        raise NotYet("you added one W_i^T g_L per block, but the blocks' factors multiply: the "
                     "gradient that reaches block i has already passed the blocks above it, "
                     "so products such as W_i^T W_j^T g_L appear too")
    raise NotYet(f"max |yours - autograd| = {(got - want).abs().max().item():.2g}; apply the "
                 "chain rule one block at a time, from the top: multiply the gradient by the "
                 "transpose of each block's Jacobian")


@exercise
def check_expected_gain(gain: Callable[[float, int, bool], float]) -> str:
    """Exercise 5: the RMS gain, sqrt(E||J v||^2 / ||v||^2), of a plain and a residual stack."""
    cases = [(0.5, 10), (1.0, 4), (0.2, 50), (1.5, 3)]
    for residual in (False, True):
        for scale, depth in cases:
            got = gain(scale, depth, residual)
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                raise NotYet(f"return a float, got {type(got).__name__} for scale={scale}, "
                             f"depth={depth}, residual={residual}")
            want = expected_rms_gain(scale, depth, residual)
            if close(got, want, rel=1e-6):
                continue
            kind = "residual" if residual else "plain"
            if residual and close(got, 1 + depth * scale, rel=1e-6):
                raise NotYet("the gains of the blocks multiply, they do not add: the residual "
                             "stack's gain is a product over blocks")
            squared = (1 + scale**2 if residual else scale**2) ** depth
            if close(got, squared, rel=1e-6):
                raise NotYet(f"for the {kind} stack you gave {got:.4g}, which is "
                             "E||J v||^2 / ||v||^2, the expected *squared* gain; the gain is "
                             "its square root")
            if residual and close(got, (1 + scale) ** depth, rel=1e-6):
                raise NotYet("(1 + scale)^depth would be the gain if W v always pointed "
                             "along v, so that the two lengths add; it does not. Expand "
                             "||(I + W)v||^2 into its terms and take the expectation of each")
            raise NotYet(f"for the {kind} stack with scale={scale}, depth={depth} you gave "
                         f"{got:.4g}; expected {want:.4g}. Start from what one block does "
                         "to E||v||^2, then repeat depth times")
    return ("plain: scale^depth, residual: (1 + scale^2)^(depth/2). The plain RMS gain "
            "collapses or explodes geometrically unless scale = 1; the residual one never "
            "falls below 1 but grows with depth, faster the larger the branches: the identity "
            "guarantees a path, not a well-scaled one.")


GAIN_OPTIONS = ("plain", "residual", "about the same")


@exercise
def check_gain_prediction(guess: object, scale: float = 1.5, depth: int = 50) -> str:
    """Prediction: with large branches, which stack's gradient gain is larger at depth 50?"""
    config = LinearStack(width=64, depth=depth, scale=scale)
    plain, residual = (jacobian_gains(config.build(r)).rms[-1] for r in (False, True))
    ratio = residual / plain
    right = ("about the same" if 0.1 <= ratio <= 10 else
             "residual" if ratio > 1 else "plain")
    why = (f"At s = {scale:g} and {depth} blocks the measured gain is {plain:.1e} (plain) and "
           f"{residual:.1e} (residual): each factor I + W_i is typically larger than W_i "
           "alone (Exercise 5 makes this exact).")
    what = f"the stack with the larger gain after {depth} blocks at s = {scale:g}"
    return judge_choice(guess, right, GAIN_OPTIONS, what=what, why=why)


def _autograd_hint(e: RuntimeError) -> str:
    """Exercise 2's usual autograd errors, in the notebook's words."""
    msg = str(e)
    if "does not require grad" in msg:
        return ("autograd can only differentiate with respect to a tensor it has watched: x "
                "arrives without requires_grad, so make a copy that requires a gradient "
                "before you run F on it, and differentiate with respect to that copy")
    if "implicitly created only for scalar outputs" in msg:
        return ("F(x) is a tensor, not a single number, so autograd needs the vector to "
                "multiply the Jacobian with: that is what grad_outputs is for")
    if "backward through the graph a second time" in msg:
        return "you back-propagated through F's graph twice: one vector-Jacobian product is enough"
    first = msg.splitlines()[0] if msg else ""
    return (f"your function stopped with an error (RuntimeError: {first}). The steps: a copy "
            "of x that requires a gradient, F(x) = block.residual_branch(x), one "
            "torch.autograd.grad with grad_outputs=g, then the shortcut's term")


@exercise
def check_block_gradient(
    block_gradient: Callable[[PreActBlock, torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """Exercise 2: dE/dx of one block y = x + F(x) given g = dE/dy, by autograd through F."""
    block = _seeded_preact_block()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        x = torch.randn(4, 8, 6, 6, dtype=torch.float64)
        g = torch.randn(4, 8, 6, 6, dtype=torch.float64)
    x_ref = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(block(x_ref), x_ref, grad_outputs=g)  # the oracle: autograd

    def whole_block(*args, **kwargs):
        raise NotYet("call block.residual_branch(x), not block(x): the point is to add the "
                     "shortcut's term yourself")

    block.forward = whole_block  # the student's code gets F, not the whole block
    try:
        got = block_gradient(block, x.clone(), g.clone())
    except NotImplementedError:  # the stub (a RuntimeError too)
        raise
    except RuntimeError as e:
        raise NotYet(_autograd_hint(e)) from None
    except TypeError as e:
        if "'tuple'" not in str(e):
            raise
        raise NotYet("torch.autograd.grad returns a tuple, one gradient per input you asked "
                     "for: take its element (`(through_f,) = torch.autograd.grad(...)`)") \
            from None
    if got is None:
        raise returned_none(block_gradient)
    if isinstance(got, tuple):
        raise NotYet("you return a tuple: torch.autograd.grad returns one gradient per input "
                     "you asked for, in a tuple; return a tensor shaped like x")
    if not isinstance(got, torch.Tensor):
        raise NotYet(f"return a tensor shaped like x, got {type(got).__name__}")
    if got.shape != want.shape:
        raise NotYet(f"return a tensor shaped like x, {tuple(want.shape)}; got "
                     f"{tuple(got.shape)}")
    got = got.detach().to(torch.float64)

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, rtol=1e-9, atol=1e-12)

    if same(got, want):
        return ("g + g . dF/dx matches autograd through the whole block. The first term is "
                "the shortcut's: it passes g back unchanged, whatever F's weights are.")
    x_f = x.clone().requires_grad_(True)
    f = block.residual_branch(x_f)
    (through_f,) = torch.autograd.grad(f, x_f, grad_outputs=g, retain_graph=True)
    (through_ones,) = torch.autograd.grad(f.sum(), x_f)
    hints = [
        (through_f, "that is g . dF/dx only, the gradient through the branch: the shortcut "
                    "adds g itself (y = x + F(x), so dy/dx = I + dF/dx)"),
        (g, "that is only the shortcut's term g; the branch adds g . dF/dx, a "
            "vector-Jacobian product through block.residual_branch with grad_outputs=g"),
        (g + through_ones, "you back-propagated F(x).sum(), i.e. a gradient of all ones: "
                           "pass grad_outputs=g so that the branch's term is g . dF/dx"),
        (through_ones, "you back-propagated F(x).sum() (a gradient of all ones) and left out "
                       "the shortcut's term: the answer is g + g . dF/dx"),
    ]
    for wrong, hint in hints:
        if same(got, wrong):
            raise NotYet(hint)
    raise NotYet(f"max |yours - autograd| = {(got - want).abs().max().item():.2g}; the answer "
                 "is g + (the vector-Jacobian product of F at x with g)")
