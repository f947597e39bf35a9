"""Checks for notebook 00, start here: the degradation puzzle and a first block's forward.

The prediction is judged against the stored run (`results/degradation_cpu.json`, read through
the package). The two forward passes run on blocks the check builds itself, with weights
copied from a library block (`resnet_edu.blocks.BasicBlock`), and must give that block's own
output in eval and in training mode. A wrong answer is compared with the usual slips (a ReLU
in the wrong place, a missing shortcut, BatchNorm and ReLU swapped, ...) so the hint can name
the one that was made. The global random state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..blocks import BasicBlock
from ..locations import load_results
from . import NotYet, exercise, judge_choice, nontrivial_batchnorms

RUN = "degradation_cpu.json"
PLAIN_NETS = ("plain-20", "plain-56")
# (inplanes, planes, stride): an identity shortcut, then a projection (stride 2, more channels)
CASES = ((64, 64, 1), (64, 128, 2))
Forward = Callable[[BasicBlock, torch.Tensor], torch.Tensor]


def final_training_errors() -> dict[str, float]:
    """The training error of plain-20 and plain-56 after the last epoch of the stored run."""
    nets = load_results(RUN)["nets"]
    return {name: nets[name]["train_error"][-1] for name in PLAIN_NETS}


@exercise
def check_degradation_prediction(guess: object) -> str:
    """Prediction: which plain net ends the stored run with the lower training error?"""
    final = final_training_errors()
    lower, higher = sorted(final, key=final.get)
    why = (f"After the stored run {lower} is at {100 * final[lower]:.1f} % training error and "
           f"{higher} at {100 * final[higher]:.1f} %.")
    return judge_choice(guess, lower, PLAIN_NETS,
                        what="the plain net with the lower training error", why=why)


# --- the forward passes --------------------------------------------------------------------

def _library_block(inplanes: int, planes: int, stride: int, residual: bool) -> BasicBlock:
    """A seeded float64 block whose BatchNorms are not the identity, so that a swapped
    BN/ReLU order or a missing BatchNorm changes the output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(100 * planes + stride)
        block = BasicBlock(inplanes, planes, stride, residual=residual).double()
        nontrivial_batchnorms(block, spread=0.5)
    return block


def _copy(block: BasicBlock) -> BasicBlock:
    """A new block of the same kind with the library block's weights copied in."""
    with torch.random.fork_rng(devices=[]):  # its own init draws leave the global state alone
        twin = BasicBlock(block.inplanes, block.planes, block.stride,
                          residual=block.residual).double()
    twin.load_state_dict(block.state_dict())
    return twin


def _input(inplanes: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        return torch.randn(4, inplanes, 8, 8, dtype=torch.float64)  # (B, C, H, W), both signs


def _name(block: BasicBlock) -> str:
    stride = f", stride={block.stride}" if block.stride != 1 else ""
    kind = "BasicBlock" if block.residual else "PlainBasicBlock"
    return f"{kind}({block.inplanes}, {block.planes}{stride})"


def _branch(b: BasicBlock, x: torch.Tensor, slip: str) -> torch.Tensor:
    """F(x) with one of the usual slips (the right F is the block's own `residual_branch`)."""
    relu = torch.relu
    if slip == "relu_then_bn":  # ReLU before BatchNorm
        return b.bn2(b.conv2(b.bn1(relu(b.conv1(x)))))
    if slip == "no_middle_relu":
        return b.bn2(b.conv2(b.bn1(b.conv1(x))))
    if slip == "no_bn":
        return b.conv2(relu(b.conv1(x)))
    raise ValueError(f"unknown slip {slip!r}")


BRANCH_HINTS = {
    "relu_then_bn": "BatchNorm and ReLU are swapped: the order inside F is conv1 -> bn1 -> "
                    "relu -> conv2 -> bn2 (normalize first, then the ReLU)",
    "no_middle_relu": "the ReLU between the two convolutions is missing: conv1 -> bn1 -> "
                      "relu -> conv2 -> bn2",
    "no_bn": "the BatchNorms are missing: each convolution is followed by its BatchNorm "
             "(conv1 -> bn1, conv2 -> bn2)",
}


def _plain_slips(b: BasicBlock, x: torch.Tensor) -> dict[str, torch.Tensor]:
    relu = torch.relu
    slips = {slip: relu(_branch(b, x, slip)) for slip in BRANCH_HINTS}
    f = b.residual_branch(x)
    slips["plain_no_final_relu"] = f
    if f.shape == x.shape:
        slips["added_x"] = relu(f + x)
    return slips


def _residual_slips(b: BasicBlock, x: torch.Tensor) -> dict[str, torch.Tensor]:
    relu, f, s = torch.relu, b.residual_branch(x), b.shortcut(x)
    slips = {slip: relu(_branch(b, x, slip) + s) for slip in BRANCH_HINTS}
    slips |= {"relu_before_add": relu(f) + s, "relu_before_and_after": relu(relu(f) + s),
              "no_final_relu": f + s, "no_shortcut": relu(f)}
    if b.downsample is not None:
        slips["projection_without_bn"] = relu(f + b.downsample[0](x))
    elif b.inplanes == b.planes:  # pre-activation order: BN-ReLU-conv, twice
        slips["preact_order"] = b.conv2(relu(b.bn2(b.conv1(relu(b.bn1(x)))))) + x
    return slips


SLIP_HINTS = BRANCH_HINTS | {
    "no_final_relu": "the final ReLU is missing: the block ends with relu(...) after the "
                     "addition",
    "plain_no_final_relu": "the final ReLU is missing: a plain block ends with "
                           "relu(bn2(conv2(...)))",
    "added_x": "that is the residual block: a plain block has no shortcut, so nothing is "
               "added to F(x) (that comes in the next exercise)",
    "relu_before_add": "the ReLU comes too early: you apply it to F(x) before the addition. "
                       "BasicBlock adds first, then applies one ReLU: relu(F(x) + shortcut)",
    "relu_before_and_after": "there is one ReLU too many: F(x) ends with bn2, no ReLU; the "
                             "only ReLU after conv2 is the one after the addition",
    "no_shortcut": "the shortcut is missing: that is the plain block's output, relu(F(x)). "
                   "Add the shortcut before the final ReLU",
    "projection_without_bn": "the projection shortcut is `block.downsample`, a 1x1 conv and "
                             "its BatchNorm: call block.downsample(x), not only its conv",
    "preact_order": "that is the pre-activation order of He et al. 2016 (BN-ReLU-conv, "
                    "nothing after the addition); BasicBlock is conv-BN-ReLU with the ReLU "
                    "after the addition",
}


def _refuse_library_paths(block: BasicBlock) -> BasicBlock:
    """Stub the block's own `residual_branch`, `shortcut` and `forward` on the student's copy,
    so that an answer which calls them (instead of writing F) is refused with a clear hint."""

    def refuse(name: str, instead: str) -> Callable[..., torch.Tensor]:
        def stub(*args: object, **kwargs: object) -> torch.Tensor:
            raise NotYet(f"your function calls block.{name}(x), the library's own code: write "
                         f"{instead} yourself from block.conv1, block.bn1, block.relu, "
                         "block.conv2, block.bn2 (and block.downsample)")
        return stub

    block.residual_branch = refuse("residual_branch", "F(x)")
    block.shortcut = refuse("shortcut", "the shortcut (x, or block.downsample(x))")
    block.forward = refuse("forward", "the forward pass")  # also block(x), type(block).forward
    return block


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-9, atol=1e-9)


def _run(answer: Forward, block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        got = answer(block, x.clone())  # a clone: an in-place ReLU on x must not leak out
    if got is None:
        raise NotImplementedError  # a body of `...` returns None: not attempted yet
    if not isinstance(got, torch.Tensor):
        raise NotYet(f"return the block's output as a tensor, got {type(got).__name__}")
    return got


def _shape_error(e: RuntimeError, block: BasicBlock, x: torch.Tensor) -> NotYet | None:
    """The hint for adding x itself where the block changes the shape, else None."""
    if "must match the size" not in str(e) or block.downsample is None:
        return None
    with torch.no_grad():
        f = block.residual_branch(x)
    return NotYet(f"on {_name(block)} your addition fails: F(x) has shape {tuple(f.shape)} "
                  f"but x has {tuple(x.shape)}. Where the shapes differ the shortcut is not x "
                  "but block.downsample(x), the 1x1 projection W_s x")


def _compare(answer: Forward, residual: bool) -> str:
    slips = _residual_slips if residual else _plain_slips
    for inplanes, planes, stride in CASES:
        library = _library_block(inplanes, planes, stride, residual)
        x, name = _input(inplanes), _name(library)
        for mode in ("eval", "train"):
            # copied weights, fresh statistics; the student's copy refuses the library's paths
            reference, yours = _copy(library), _refuse_library_paths(_copy(library))
            reference.train(mode == "train")
            yours.train(mode == "train")
            try:
                got = _run(answer, yours, x)
            except RuntimeError as e:
                hint = _shape_error(e, reference, x)  # the copy that runs the library's F
                if hint is None:
                    raise
                raise hint from None
            except TypeError as e:
                if "'NoneType' object is not callable" in str(e) and yours.downsample is None:
                    raise NotYet(f"{name} has block.downsample = None (x and F(x) have the "
                                 "same shape): the shortcut is then x itself") from None
                raise
            with torch.no_grad():
                want = reference(x.clone())
            if _same(got, want):
                continue
            if got.shape != want.shape:
                raise NotYet(f"on {name} your output has shape {tuple(got.shape)}, the "
                             f"library block's {tuple(want.shape)}")
            if mode == "train":
                raise NotYet(f"right in eval mode, but not in training mode on {name}: use the "
                             "block's own modules (block.bn1(...), not running statistics or "
                             "a BatchNorm of your own), so that in training BatchNorm uses the "
                             "statistics of the batch")
            with torch.no_grad():
                for slip, wrong in slips(_copy(library).eval(), x.clone()).items():
                    if _same(got, wrong):
                        raise NotYet(f"on {name}: {SLIP_HINTS[slip]}")
            diff = (got - want).abs().max().item()
            raise NotYet(f"on {name} (eval mode) your output differs from the library block's "
                         f"by up to {diff:.2g}. The order is conv1 -> bn1 -> relu -> conv2 -> "
                         "bn2" + (", add the shortcut, relu" if residual else ", relu"))
    return ", ".join(_name(_library_block(*case, residual)) for case in CASES)


@exercise
def check_plain_forward(plain_forward: Forward) -> str:
    """Exercise 1: the forward pass of a plain block, y = ReLU(F(x))."""
    blocks = _compare(plain_forward, residual=False)
    return (f"your plain forward gives the library's output on {blocks}, in eval and in "
            "training mode. Stack 27 of these (plus a first conv and a classifier) and you "
            "have the plain-56 of the puzzle.")


@exercise
def check_basic_block_forward(forward: Forward) -> str:
    """Exercise 2: BasicBlock's forward, y = ReLU(F(x) + x), or ReLU(F(x) + W_s x)."""
    blocks = _compare(forward, residual=True)
    return (f"your forward gives the library's output on {blocks}, in eval and in training "
            "mode, with the identity shortcut and with the projection. It differs from your "
            "plain forward by one addition: that is all that separates ResNet-56 from "
            "plain-56.")
