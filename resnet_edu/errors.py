"""Showing an expected error in a notebook without halting "Run All".

A cell that raises stops "Run All" in JupyterLab and Colab, so notebooks run the failing
code through `show_error`, which catches the one exception it expects and prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def show_error(code: Callable[[], Any], expected: type[BaseException] = Exception,
               ) -> BaseException | None:
    """Run `code()`; print and return the expected exception (re-raise any other).

    The printed line is "<ExceptionType>: <message>", the same as the last line of a
    traceback, so a notebook can read it with the student. If nothing is raised, it says so.
    """
    try:
        code()
    except expected as e:
        print(f"{type(e).__name__}: {e}")
        return e
    print(f"No error: the code ran without raising {expected.__name__}.")
    return None
