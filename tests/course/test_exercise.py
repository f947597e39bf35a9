"""The exercise mechanism, and every notebook's solutions passing their own checks."""

import ast
import json
import re
from pathlib import Path

import pytest

from resnet_edu.course.exercise import Feedback, NotYet, close, exercise
from resnet_edu.course.widgets import show_error

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@exercise
def check_double(fn) -> str:
    if fn(2) != 4:
        raise NotYet(f"double(2) should be 4, got {fn(2)!r}")
    return "double works."


def test_a_check_never_raises_and_reports_what_is_missing():
    assert check_double(lambda x: 2 * x) == Feedback(True, "double works.")
    wrong = check_double(lambda x: x + 1)
    assert not wrong and repr(wrong) == "Not yet: double(2) should be 4, got 3"

    def unattempted(x):
        raise NotImplementedError

    assert "not attempted yet" in repr(check_double(unattempted))
    crashed = check_double(lambda x: x / "a")
    assert not crashed and "raised TypeError" in crashed.message
    assert repr(check_double(lambda x: 2 * x)) == "Correct! double works."


def test_close():
    assert close(1.0, 1.00001) and not close(1.0, 1.1) and close(0.0, 1e-8)


def test_show_error_prints_the_expected_error_and_lets_others_through(capsys):
    err = show_error(lambda: [][1], IndexError)
    assert isinstance(err, IndexError)
    assert capsys.readouterr().out == "IndexError: list index out of range\n"
    assert show_error(lambda: 1, ValueError) is None
    assert "No error" in capsys.readouterr().out
    with pytest.raises(KeyError):
        show_error(lambda: {}["k"], ValueError)  # an unexpected error is not hidden


def solution_blocks(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    blocks = []
    for cell in cells:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and "<details>" in text:
            blocks += re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return blocks


SOLUTIONS = [(nb.name, i, code) for nb in NOTEBOOKS for i, code in enumerate(solution_blocks(nb))]
# the one extractor for every notebook: it must find each notebook's solutions


def solution_cells(path: Path) -> int:
    """Markdown cells that fold away a solution: each must hold one ```python block."""
    return sum(cell["cell_type"] == "markdown" and "<summary>Solution</summary>" in "".join(
        cell["source"]) for cell in json.loads(path.read_text())["cells"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_the_extractor_finds_every_solution(notebook):
    assert sum(n == notebook.name for n, _, _ in SOLUTIONS) == solution_cells(notebook)


@pytest.mark.parametrize("notebook, index, code", SOLUTIONS,
                         ids=[f"{n}-solution{i + 1}" for n, i, _ in SOLUTIONS])
def test_notebook_solutions_pass_their_checks(notebook, index, code):
    """Each solution block runs on its own and ends with a check that passes."""
    tree = ast.parse(code)
    assert isinstance(tree.body[-1], ast.Expr), "a solution block ends with its check call"
    namespace: dict = {}
    exec(compile(ast.Module(tree.body[:-1], []), notebook, "exec"), namespace)
    last = tree.body[-1].value
    if isinstance(last, ast.Call) and getattr(last.func, "id", None) == "print":
        last = last.args[0]  # print(check_...(...)) shows the same feedback
    result = eval(compile(ast.Expression(last), notebook, "eval"), namespace)
    assert isinstance(result, Feedback), "the last line must call a check_... function"
    assert result, result.message


@exercise
def check_guess(guess) -> str:
    from resnet_edu.course.exercise import judge_prediction
    return judge_prediction(guess, 10.0, what="the answer", why="Because.")


@exercise
def check_pick(guess) -> str:
    from resnet_edu.course.exercise import judge_choice
    return judge_choice(guess, "b", ("a", "b", "c"), what="the block that crashes")


def test_predictions_and_choices_are_judged_with_a_direction():
    assert check_guess(11) and "measurement is 10" in check_guess(11).message
    assert "too high" in check_guess(20).message and "too low" in check_guess(2).message
    assert "first" in check_guess(...).message and "number" in check_guess("ten").message
    assert not check_guess(True)
    assert check_pick(" B ") and not check_pick("a") and "it is 'b'" in check_pick("a").message
    assert "one of" in check_pick("d").message and "first" in check_pick(...).message
