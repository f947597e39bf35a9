"""The exercise mechanism shared by every notebook.

A check is a function decorated with `@exercise`. It inspects the student's answer and
either returns a short success message or raises `NotYet("what is missing")`. The
decorator turns both outcomes, and any error the student's own code raises, into a
`Feedback` value, so a check never raises and "Run All" always reaches the end.

    >>> check_identity_block(my_block)   # in a notebook: displays the feedback line
    Not yet: F(x) is not zero, so the block is not the identity (max |F(x)| = 0.41).
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


class NotYet(Exception):
    """Raised inside a check: the message tells the student what is still missing."""


@dataclass(frozen=True)
class Feedback:
    """The outcome of a check; true when the answer passed."""

    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return ("Correct! " if self.passed else "Not yet: ") + self.message


def exercise(check: Callable[..., str]) -> Callable[..., Feedback]:
    """Wrap a check so that it returns Feedback instead of raising."""

    @functools.wraps(check)
    def run(*args, **kwargs) -> Feedback:
        try:
            return Feedback(True, check(*args, **kwargs) or "")
        except NotYet as e:
            return Feedback(False, str(e))
        except NotImplementedError:
            return Feedback(False, "the exercise is not attempted yet: replace the `...` "
                                   "or `raise NotImplementedError` with your answer.")
        except Exception as e:  # the student's code failed: say how, don't halt Run All
            return Feedback(False, f"running your answer raised {type(e).__name__}: {e}")

    return run


def close(actual: float, expected: float, rel: float = 1e-4, abs_: float = 1e-6) -> bool:
    """Numbers agree within a relative or absolute tolerance."""
    return abs(actual - expected) <= max(abs_, rel * abs(expected))


def require_prediction(guess: object, what: str) -> None:
    """NotYet while the prediction cell still holds `...`: call it before measuring anything."""
    if guess is Ellipsis:
        raise NotYet(f"write down your prediction of {what} first (replace the `...`), then "
                     "run this cell again: the point is to commit before you look")


def require_choice(guess: object, options: tuple[str, ...], what: str) -> None:
    """NotYet while the choice cell still holds `...`: call it before measuring anything."""
    if guess is Ellipsis:
        raise NotYet(f"choose {what} first: one of {', '.join(map(repr, options))}")


def judge_prediction(guess: object, actual: float, *, what: str, rel: float = 0.25,
                     why: str = "") -> str:
    """Compare a student's numeric prediction with the measured value, inside a check.

    Returns the success message, or raises NotYet saying how far off the guess is and in
    which direction. `why` is the one-line explanation shown in both cases.
    """
    require_prediction(guess, what)
    if isinstance(guess, bool) or not isinstance(guess, (int, float)):
        raise NotYet(f"your prediction of {what} should be a number, got {guess!r}")
    tail = f" {why}" if why else ""
    if abs(guess - actual) <= rel * abs(actual):
        return f"you predicted {guess:.3g} for {what}; the measurement is {actual:.3g}.{tail}"
    side = "high" if guess > actual else "low"
    raise NotYet(f"you predicted {guess:.3g} for {what}, but the measurement is {actual:.3g}: "
                 f"too {side} by more than {rel:.0%}.{tail}")


def judge_choice(guess: object, right: str, options: tuple[str, ...], *, what: str,
                 why: str = "") -> str:
    """Compare a student's choice among `options` with the right one, inside a check."""
    require_choice(guess, options, what)
    if not isinstance(guess, str) or guess.strip().lower() not in {o.lower() for o in options}:
        raise NotYet(f"{what} should be one of {', '.join(map(repr, options))}, got {guess!r}")
    tail = f" {why}" if why else ""
    if guess.strip().lower() != right.lower():
        raise NotYet(f"you chose {guess!r} for {what}; it is {right!r}.{tail}")
    return f"{right!r} is right for {what}.{tail}"


@contextmanager
def one_thread() -> Iterator[None]:
    """Run a check's small tensors on one CPU thread, then restore the thread count: tiny
    convolutions gain nothing from threads, and on a busy CPU lose much to them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def nontrivial_batchnorms(module: nn.Module, spread: float, running_var: bool = True) -> None:
    """Give every BatchNorm2d in `module` random affine parameters and running statistics.

    A fresh BatchNorm is the identity in eval mode, so a check's block with fresh norms cannot
    tell a swapped BN/ReLU order or a missing BatchNorm from the right answer. Draws from the
    global random state: call it under the check's own seed.
    """
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, spread)
            m.running_mean.normal_(0, spread)
            if running_var:
                m.running_var.uniform_(0.5, 2.0)


def names_used(fn: Callable) -> set[str]:
    """The global names, attributes and enclosing names `fn`'s code reads, with its nested
    functions': how a check tells an answer that calls the library's own (a wrapper) apart."""
    names, stack = set(), [getattr(fn, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is None:
            continue
        names.update(code.co_names, code.co_freevars)
        stack.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    return names


def unanswered(fn: object) -> bool:
    """Whether `fn`'s body is still the notebook's stub (`...`, `pass` or `raise
    NotImplementedError`, after an optional docstring). Where its source cannot be read, a
    function that returns None counts as unanswered, as before."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))  # type: ignore[arg-type]
    except (OSError, TypeError, SyntaxError, IndentationError):
        return True
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not defs:  # a lambda, or a definition the source lines do not show: not the stub
        return False
    body = list(defs[0].body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring

    def stub(node: ast.stmt) -> bool:
        if isinstance(node, ast.Pass):
            return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return node.value.value is Ellipsis
        if isinstance(node, ast.Raise):
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
        return False
    return all(stub(node) for node in body)


def returned_none(fn: object, what: str = "your function") -> Exception:
    """What a check raises when the student's function returned None: "not attempted"
    while the body is still the stub, else a hint that the `return` is missing."""
    if unanswered(fn):
        return NotImplementedError()
    return NotYet(f"{what} returns None: it computes something, but the result never leaves "
                  "the function. Is the `return` missing?")
