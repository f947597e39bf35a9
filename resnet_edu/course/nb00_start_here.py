"""Checks for notebook 00, start here: the degradation puzzle and a first block's forward.

The prediction is judged against the stored run (`degradation_cpu.json` of the shipped results,
read through the package). The two forward passes run on blocks the check builds itself, with
weights copied from a library block (`resnet_edu.blocks.BasicBlock`), and must give that
block's own output in eval and in training mode. The notebook gives the parts and numbered
rules and leaves the decisions (where the ReLUs and the addition go) to the student. A wrong
answer is compared with the usual slips (a ReLU in the wrong place, a missing shortcut,
BatchNorm and ReLU swapped, ...), and for the residual block the check measures what the
decision costs: whether the block is the identity when its branch is switched off (rule 4),
whether its output can be negative (rule 5), whether the branch can lower a feature as well as
raise it (rule 6). The hint names the rule with the number. The global random state is left as
it was.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..blocks import BasicBlock
from ..locations import load_results
from .exercise import NotYet, exercise, judge_choice, nontrivial_batchnorms, returned_none

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


# The rules the notebook's instructions state, by number, so that a hint can point at one.
BRANCH_HINTS = {
    "relu_then_bn": "BatchNorm and ReLU are swapped: each convolution's BatchNorm comes right "
                    "after it, before any activation (rule 1)",
    "no_middle_relu": "the ReLU between the two convolutions is missing: conv1 and conv2 meet "
                      "with only bn1 between them, a linear map, so the two convolutions act "
                      "as one linear map (rule 2)",
    "no_bn": "the BatchNorms are missing: each convolution is followed by its own BatchNorm "
             "(rule 1)",
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
              "no_final_relu": f + s, "no_shortcut": relu(f),
              "added_before_bn2": relu(b.bn2(b.conv2(relu(b.bn1(b.conv1(x)))) + s))}
    if b.downsample is not None:
        slips["projection_without_bn"] = relu(f + b.downsample[0](x))
        slips["relu_on_shortcut"] = relu(f + relu(s))
    elif b.inplanes == b.planes:  # pre-activation order: BN-ReLU-conv, twice
        slips["preact_order"] = b.conv2(relu(b.bn2(b.conv1(relu(b.bn1(x)))))) + x
    return slips


# What a wrong decision about the ReLU or the addition costs, in He et al. 2016's Table 2
# (ResNet-110 on CIFAR-10, error %; the original block: 6.61).
PAPER_NOTES = {
    "relu_before_add": " He et al. 2016 (Sec. 4.1, Fig. 4c, Table 2) tried this 'ReLU before "
                       "addition': 7.84 % error on ResNet-110 against 6.61 % for the original "
                       "block.",
    "relu_before_and_after": " Your block has two ReLUs after conv2 where it needs one: the "
                             "one applied to F(x) alone is what makes the branch "
                             "non-negative.",
    "preact_order": " That is the pre-activation order of He et al. 2016 (BN-ReLU-conv, "
                    "nothing after the addition), a good block but not this one: F here is "
                    "your plain block's layers in their order, conv first (rule 7).",
    "added_before_bn2": " The addition comes before bn2, so BatchNorm rescales the shortcut "
                        "too: He et al. 2016 (Fig. 4b, Table 2) call this 'BN after addition', "
                        "8.17 % error on ResNet-110 against 6.61 %.",
    "no_shortcut": " Your output is the plain block's: nothing is added to F(x).",
}

SLIP_HINTS = BRANCH_HINTS | {
    "plain_no_final_relu": "the block ends in bn2, so in a stack this block's conv2 and the "
                           "next block's conv1 meet with only a BatchNorm between them, a "
                           "linear map: the two convolutions act as one (rule 2)",
    "added_x": "that is the residual block: a plain block has no shortcut, so nothing is "
               "added to F(x) (rule 3; the shortcut comes in the next exercise)",
    "projection_without_bn": "the shortcut of this block is `block.downsample`, a 1x1 conv "
                             "and its BatchNorm: call block.downsample(x), not only its conv",
    "relu_on_shortcut": "F(x) is right, but your shortcut goes through a ReLU: the shortcut is "
                        "block.downsample(x) as it is, with no activation of its own",
    "preact_order": "that is the pre-activation order of He et al. 2016 (BN-ReLU-conv, "
                    "nothing after the addition); F here is your plain block's layers in "
                    "their order, conv first (rule 7)",
}


def _switched_off(library: BasicBlock) -> BasicBlock:
    """A copy of the library block in eval mode whose branch outputs 0: bn2's scale and
    shift set to 0, as zero-init does to the scale."""
    block = _copy(library).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    return block


def _identity_deviation(answer: Forward, library: BasicBlock) -> float | None:
    """max |y - x| of the answer on a block whose branch is switched off, for a non-negative
    input (what a block receives from the ReLU before it); None where the block changes the
    shape or the answer does not run there."""
    if library.downsample is not None or library.inplanes != library.planes:
        return None
    x = torch.relu(_input(library.inplanes))
    try:
        with torch.no_grad():
            y = answer(_refuse_library_paths(_switched_off(library)), x.clone())
    except Exception:  # the student's code: the main comparison reports its error
        return None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        return None
    return (y - x).abs().max().item()


def _decision_hint(answer: Forward, library: BasicBlock, x: torch.Tensor, got: torch.Tensor,
                   slip: str | None) -> str | None:
    """What the check measures about the residual block's three rules, for a wrong answer:
    the first rule it breaks, with the number, or None if it keeps all three."""
    name = _name(library)
    note = PAPER_NOTES.get(slip or "", "")
    deviation = _identity_deviation(answer, library)
    if deviation is not None and deviation > 1e-6:
        return (f"on {name}: with the branch switched off (bn2's weight and bias set to 0, so "
                f"F(x) = 0) your block does not pass its input through: its output differs "
                f"from x by up to {deviation:.2f} (rule 4). A block that is not the identity "
                f"when F = 0 cannot start as the identity.{note}")
    reference = _copy(library).eval()
    with torch.no_grad():
        s, want = reference.shortcut(x), reference(x)
    if got.shape != s.shape:
        return None
    lowest, library_lowest = (got - s).min().item(), (want - s).min().item()
    if lowest >= -1e-9 > library_lowest:
        return (f"on {name}: your branch can only add. Your output minus the shortcut is "
                f"never below 0 (smallest value {lowest:.2f}; BasicBlock's: "
                f"{library_lowest:.2f}), so F can raise a feature but never lower it, and the "
                f"signal can only grow from block to block (rule 6).{note}")
    if got.min().item() < -1e-9:
        share = (got < 0).double().mean().item()
        return (f"on {name}: {share:.0%} of your block's outputs are negative (the smallest "
                f"{got.min().item():.2f}), but the output of a block in this net is never "
                f"negative (rule 5): without a ReLU after the addition, this block's last layer "
                f"and the next block's conv1 meet with nothing non-linear between them.{note}")
    return None


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
    if got is None:  # a body of `...` returns None: not attempted yet, or no `return`
        raise returned_none(answer)
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
                  "but block.downsample(x) (in BasicBlock a 1x1 conv with the block's stride "
                  "and its BatchNorm, option B)")


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
                    if not residual:
                        raise NotYet(f"{name} has block.downsample = None: a plain block has "
                                     "no shortcut, so nothing is added (rule 3)") from None
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
                matched = next((slip for slip, wrong in slips(_copy(library).eval(),
                                                              x.clone()).items()
                                if _same(got, wrong)), None)
            if matched in BRANCH_HINTS or (matched in SLIP_HINTS and not residual):
                measured = ""
                if matched == "plain_no_final_relu":
                    measured = (f"{(got < 0).double().mean().item():.0%} of your outputs are "
                                f"negative (the smallest {got.min().item():.2f}): ")
                raise NotYet(f"on {name}: {measured}{SLIP_HINTS[matched]}")
            if residual:
                hint = _decision_hint(answer, library, x, got, matched)
                if hint is not None:
                    raise NotYet(hint)
                if matched is not None:
                    raise NotYet(f"on {name}: {SLIP_HINTS[matched]}")
            diff = (got - want).abs().max().item()
            if residual:
                raise NotYet(f"on {name} (eval mode) your output differs from BasicBlock's by "
                             f"up to {diff:.2g}, though it keeps rules 4 to 6 as far as the "
                             "check measures them: compare your F with rule 7 (your plain "
                             "block's layers, in their order, before its last ReLU)")
            raise NotYet(f"on {name} (eval mode) your output differs from PlainBasicBlock's by "
                         f"up to {diff:.2g}: compare each convolution, its BatchNorm and the "
                         "ReLUs with rules 1 and 2")
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
