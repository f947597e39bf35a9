"""The exercise mechanism shared by every notebook.

A check is a function decorated with `@exercise`. It inspects the student's answer and
either returns a short success message or raises `NotYet("what is missing")`. The
decorator turns both outcomes, and any error the student's own code raises, into a
`Feedback` value, so a check never raises and "Run All" always reaches the end.

    >>> check_identity_block(my_block)   # in a notebook: displays the feedback line
    Not yet: F(x) is not zero, so the block is not the identity (max |F(x)| = 0.41).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass


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
