"""Checks on the residual blocks a traced pass found: each returns `Finding`s, with the text.

- `shape-mismatch` / `forward-error`: the forward pass raised; where, and why.
- `shortcut-activation`: a nonlinearity on the shortcut (a BN-ReLU before a projection's
  conv, the pre-activation design, is not one).
- `unneeded-projection`: weights on a shortcut whose shapes need none.
- `no-normalization` (per block): a projection shortcut without a normalization layer.
- `branch-ends-in-activation`: F(x) >= 0, so the sum can only grow.
"""

from __future__ import annotations

from collections.abc import Sequence

from .report import BlockRecord, Finding, _fmt


def projection_needed(input_shape: Sequence[int], output_shape: Sequence[int]) -> bool:
    """True when x of `input_shape` cannot be added to F(x) of `output_shape` as it is."""
    return tuple(input_shape) != tuple(output_shape)


def forward_error_finding(error: BaseException, stack: list[str],
                           blocks: Sequence[BlockRecord]) -> Finding:
    """Turn an exception from the forward pass into a shape-mismatch or forward-error."""
    failed = next((b for b in blocks if b.failed), None)
    where = stack[-1] if stack and stack[-1] else "the model's own forward"
    message = f"{type(error).__name__}: {error}"
    if failed is not None:
        main, short = failed.main_shape, failed.shortcut_shape
        return Finding(
            "shape-mismatch", failed.name,
            f"the main path gives {_fmt(main)} but the shortcut gives {_fmt(short)}, so "
            f"F(x) + x fails ({message}).",
            "y = F(x) + x (He et al. 2015, Eq. 1) adds the two paths element by element, so "
            "they must have the same channels and the same height and width. "
            + _mismatch_reason(main, short, failed),
            _mismatch_fix(main, short, failed),
        )
    if isinstance(error, AttributeError):
        return Finding(
            "forward-error", where, f"the forward pass raised {message}.",
            "forward() reads an attribute that __init__ never set. Python only notices when "
            "that line runs, so the same class can work for some blocks (e.g. where an `or` "
            "short-circuits) and crash for others.",
            "store the value in __init__ (e.g. `self.in_channels = in_channels`) or compute "
            "it from a layer that exists (e.g. `self.conv1.in_channels`).",
        )
    return Finding(
        "forward-error", where, f"the forward pass raised {message} in {where}.",
        "a layer received a tensor it was not built for; the message names what it expected "
        "and what came.",
        "compare the layer's in_channels/in_features with the shape printed by "
        "`report.block_table()`; in a `_make_layer` the next block's input width must be the "
        "previous block's output width.",
    )


def _mismatch_reason(main: tuple | None, short: tuple | None, record: BlockRecord) -> str:
    if main is None or short is None or len(main) != 4 or len(short) != 4:
        return ""
    parts = []
    if main[2:] != short[2:]:
        parts.append(f"The main path turns {record.fork_shape[2]}x{record.fork_shape[3]} "
                     f"into {main[2]}x{main[3]} (a strided conv) but the shortcut gives "
                     f"{short[2]}x{short[3]}.")
    if main[1] != short[1]:
        parts.append(f"The main path has {main[1]} channels, the shortcut {short[1]}.")
    return " ".join(parts)


def _mismatch_fix(main: tuple | None, short: tuple | None, record: BlockRecord) -> str:
    if main and short and len(main) == 4 and len(short) == 4 and main[2] and short[2]:
        stride = max(1, round(record.fork_shape[2] / main[2])) if record.fork_shape else 1
        if record.shortcut_has_weights:
            return (f"build the shortcut as a 1x1 conv with stride={stride} and "
                    f"{main[1]} output channels, then BatchNorm (option B, "
                    "`resnet_edu.shortcuts.make_downsample`); nothing else in it.")
        return (f"this block needs a projection: add a shortcut module (1x1 conv, "
                f"stride={stride}, {main[1]} channels, then BatchNorm) where the shapes change.")
    return "make the shortcut produce exactly the main path's output shape."


def find_shortcut_activations(blocks: Sequence[BlockRecord]) -> list[Finding]:
    """A nonlinearity on the shortcut: on an identity shortcut, or after the projection's
    first conv. A BN-ReLU before the projection's conv (pre-activation) is not one."""
    bad = [b for b in blocks if b.shortcut_activations]
    if not bad:
        return []
    kinds = sorted({a for b in bad for a in b.shortcut_activations})
    return [Finding(
        "shortcut-activation", ", ".join(b.name for b in bad),
        f"the shortcut applies {', '.join(kinds)} to what it carries (after its projection, "
        "or to x itself).",
        "the shortcut should carry x unchanged, or where the shape changes a linear "
        "projection W_s x (He et al. 2015, Eq. 2). He et al. 2016 ('Identity Mappings', "
        "Sec. 3, Table 1) find that multiplicative manipulations of the shortcut (scaling, "
        "gating, 1x1 convs, dropout) hamper the optimization of deep nets: on ResNet-110, "
        "1x1-conv shortcuts give 12.22 % test error against 6.61 % for the identity. A ReLU "
        "is not among the variants they test, but it is such a manipulation: it multiplies "
        "each entry by 0 or 1, so the negative entries (about half, after a BatchNorm) and "
        "their gradients are zeroed. (On an input that is already non-negative it does "
        "nothing and can simply go.)",
        "remove the activation from the shortcut: 1x1 conv + BatchNorm where a projection is "
        "needed, nothing (identity) elsewhere. A BN-ReLU before the projection's conv, as in "
        "pre-activation nets (He et al. 2016, appendix), is fine and not reported.",
    )]


def find_unneeded_projections(blocks: Sequence[BlockRecord],
                              parameters: dict[str, int] | None = None,
                              total: int = 0) -> list[Finding]:
    """Shortcuts with weights on blocks whose input already has the output's shape.

    `parameters`: the parameter count of each shortcut module, by name, and `total` the
    model's, to say what the unneeded projections cost.
    """
    bad = [b for b in blocks if b.shortcut_has_weights and b.fork_shape is not None
           and not b.failed and not projection_needed(b.fork_shape, b.main_shape)]
    if not bad:
        return []
    counted = [parameters[b.shortcut] for b in bad
               if parameters is not None and b.shortcut in parameters]
    cost_note = ""
    if counted and len(counted) == len(bad) and total:
        cost_note = (f" They hold {sum(counted):,} parameters, {sum(counted) / total:.1%} of "
                     "the model's.")
    all_blocks = all(b.shortcut_has_weights for b in blocks)
    note = (" Every block has one: this is option C of He et al. 2015 (Table 3), a deliberate "
            "choice there; if you chose it, pass ignore=('unneeded-projection',)."
            if all_blocks and len(bad) > 1 else "")
    return [Finding(
        "unneeded-projection", ", ".join(b.name for b in bad),
        f"{len(bad)} block(s) project x with a 1x1 conv although x already has the output "
        "shape." + cost_note,
        "a projection W_s x is only needed where the shapes differ (He et al. 2015, Eq. 2, "
        "option B); elsewhere the identity is free. In a shallow net projections everywhere "
        "do no harm (option C: on ResNet-34 slightly the best of A/B/C, 24.19 % top-1 error "
        "against 24.52 % for B, He et al. 2015, Table 3), but in a deep one they do: on "
        "ResNet-110, 1x1-conv shortcuts give 12.22 % test error against 6.61 % for the "
        "identity (He et al. 2016, Table 1)." + note,
        "build the projection only when stride != 1 or in_channels != out_channels "
        "(`resnet_edu.shortcuts.needs_projection`), and use the identity otherwise.",
    )]


def find_unnormalized_projections(blocks: Sequence[BlockRecord]) -> list[Finding]:
    """Projection shortcuts without a normalization layer where the branch ends in one.

    A pre-activation block normalizes x before the fork and ends its branch in a conv, so
    its projection needs no normalization of its own (He et al. 2016): not flagged.
    """
    bad = [b for b in blocks if b.shortcut_has_weights and b.branch_normalized
           and not b.shortcut_normalized]
    if not bad:
        return []
    return [Finding(
        "no-normalization", ", ".join(b.name for b in bad),
        f"{len(bad)} projection shortcut(s) end in a conv with no normalization after it, "
        "while the branch ends in one.",
        "the branch ends in a normalization layer, so F(x) comes at a scale set by it "
        "(BatchNorm's gamma, 1 at the start); the unnormalized 1x1 conv gives the shortcut "
        "whatever scale its initialization and its input give it, and that decides how much "
        "each path contributes to the sum. Option B of He et al. 2015 is a 1x1 conv followed "
        "by BatchNorm, as torchvision builds it.",
        "add the normalization layer after the shortcut's conv (`nn.Sequential(conv1x1, "
        "nn.BatchNorm2d(out_channels))`; `resnet_edu.shortcuts.make_downsample`).",
    )]


def find_branch_ending_in_activation(blocks: Sequence[BlockRecord]) -> list[Finding]:
    """A branch F whose last layer is an activation: F(x) cannot be negative."""
    bad = [b for b in blocks if b.branch_ends_in_activation]
    if not bad:
        return []
    kinds = sorted({b.branch_last_layer for b in bad if b.branch_last_layer})
    return [Finding(
        "branch-ends-in-activation", ", ".join(b.name for b in bad),
        f"the residual branch F ends in {', '.join(kinds)}, applied before the addition.",
        "with a ReLU last, F(x) >= 0, so every block can only add to x, never subtract: "
        "the signal grows block after block, and F cannot learn a correction in both "
        "directions. He et al. 2016 ('Identity Mappings', Sec. 4.1 and Fig. 4c) test this "
        "'ReLU before addition' design and find it worse than the original block; the "
        "original applies the ReLU after the addition, the pre-activation block moves it to "
        "the start of F.",
        "end the branch with the normalization layer (conv, BatchNorm) and apply the "
        "activation after the addition, y = relu(F(x) + x); or use a pre-activation block.",
    )]
