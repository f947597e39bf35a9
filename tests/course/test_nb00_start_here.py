"""Exercise checks of notebook 00: right answers pass, the usual slips get their own hint."""

import pytest
import torch

from resnet_edu.course.exercise import Feedback
from resnet_edu.course.nb00_start_here import (
    check_basic_block_forward,
    check_degradation_prediction,
    check_plain_forward,
    final_training_errors,
)
from resnet_edu.locations import load_results


def _branch(b, x):
    return b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))))


def _shortcut(b, x):
    return x if b.downsample is None else b.downsample(x)


def right_forward(block, x):
    return block.relu(_branch(block, x) + _shortcut(block, x))


def right_plain_forward(block, x):
    return block.relu(_branch(block, x))


def _not_attempted(block, x):
    ...  # a student cell left as it is


def test_the_prediction_is_judged_against_the_stored_run():
    nets = load_results("degradation_cpu.json")["nets"]
    final = final_training_errors()
    assert final == {n: nets[n]["train_error"][-1] for n in ("plain-20", "plain-56")}
    lower = min(final, key=final.get)
    higher = max(final, key=final.get)
    right = check_degradation_prediction(lower)
    assert isinstance(right, Feedback) and right.passed, right
    assert f"{100 * final[higher]:.1f} %" in right.message  # the numbers come from the run
    wrong = check_degradation_prediction(higher)
    assert not wrong.passed and f"it is '{lower}'" in wrong.message
    assert "first" in check_degradation_prediction(...).message
    assert "one of" in check_degradation_prediction("ResNet-56").message


def test_the_solutions_pass_in_eval_and_train_mode():
    assert check_basic_block_forward(right_forward).passed
    assert check_plain_forward(right_plain_forward).passed


def test_an_unanswered_cell_is_not_attempted():
    assert "not attempted" in check_basic_block_forward(_not_attempted).message
    assert "not attempted" in check_plain_forward(_not_attempted).message


SLIPS = {
    # each wrong decision about the ReLU and the addition: the rule it breaks, measured
    "ReLU before the addition": (
        lambda b, x: b.relu(_branch(b, x)) + _shortcut(b, x), "branch can only add"),
    "ReLU before and after": (
        lambda b, x: b.relu(b.relu(_branch(b, x)) + _shortcut(b, x)), "two ReLUs after conv2"),
    "missing final ReLU": (
        lambda b, x: _branch(b, x) + _shortcut(b, x), "outputs are negative"),
    "forgot the shortcut": (
        lambda b, x: b.relu(_branch(b, x)), "does not pass its input through"),
    "addition before bn2": (
        lambda b, x: b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x)))) + _shortcut(b, x))),
        "BN after addition"),
    "addition between the convolutions": (
        lambda b, x: b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x))) + _shortcut(b, x))))
        if b.downsample is None else b.relu(_branch(b, x) + _shortcut(b, x)),
        "does not pass its input through"),
    "x instead of downsample(x)": (
        lambda b, x: b.relu(_branch(b, x) + x), "not x but block.downsample(x)"),
    "downsample(x) everywhere": (
        lambda b, x: b.relu(_branch(b, x) + b.downsample(x)), "the shortcut is then x itself"),
    "BN and ReLU swapped": (
        lambda b, x: b.relu(b.bn2(b.conv2(b.bn1(b.relu(b.conv1(x))))) + _shortcut(b, x)),
        "BatchNorm and ReLU are swapped"),
    "no ReLU between the convs": (
        lambda b, x: b.relu(b.bn2(b.conv2(b.bn1(b.conv1(x)))) + _shortcut(b, x)),
        "ReLU between the two convolutions is missing"),
    "no BatchNorm": (
        lambda b, x: b.relu(b.conv2(b.relu(b.conv1(x))) + _shortcut(b, x)),
        "BatchNorms are missing"),
    "projection without its BatchNorm": (
        lambda b, x: b.relu(_branch(b, x) + (x if b.downsample is None else b.downsample[0](x))),
        "not only its conv"),
    "pre-activation order": (
        lambda b, x: b.conv2(b.relu(b.bn2(b.conv1(b.relu(b.bn1(x)))))) + x,
        "pre-activation order"),
}


@pytest.mark.parametrize("name", SLIPS)
def test_each_slip_in_the_residual_forward_gets_its_own_hint(name):
    answer, hint = SLIPS[name]
    feedback = check_basic_block_forward(answer)
    assert not feedback.passed and hint in feedback.message, feedback.message


def test_other_wrong_residual_answers_are_located():
    assert "differs from BasicBlock's" in check_basic_block_forward(  # keeps rules 4 to 6
        lambda b, x: b.relu(2 * _branch(b, x) + _shortcut(b, x))).message
    assert "(rule 4)" in check_basic_block_forward(lambda b, x: 2 * right_forward(b, x)).message
    assert "shape" in check_basic_block_forward(lambda b, x: right_forward(b, x)[:1, :3]).message
    assert "as a tensor" in check_basic_block_forward(lambda b, x: [1.0]).message

    def running_stats_only(b, x):  # right in eval mode only
        was = b.training
        b.eval()
        out = right_forward(b, x)
        b.train(was)
        return out

    assert "training mode" in check_basic_block_forward(running_stats_only).message


def test_each_slip_in_the_plain_forward_gets_its_own_hint():
    cases = {
        "outputs are negative": lambda b, x: _branch(b, x),
        "no shortcut": lambda b, x: b.relu(_branch(b, x) + x),
        "BatchNorm and ReLU are swapped":
            lambda b, x: b.relu(b.bn2(b.conv2(b.bn1(b.relu(b.conv1(x)))))),
        "BatchNorms are missing": lambda b, x: b.relu(b.conv2(b.relu(b.conv1(x)))),
    }
    for hint, answer in cases.items():
        feedback = check_plain_forward(answer)
        assert not feedback.passed and hint in feedback.message, (hint, feedback.message)


def test_the_checks_leave_the_global_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    check_basic_block_forward(right_forward)
    check_plain_forward(right_plain_forward)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("answer, called", [
    (lambda b, x: b.relu(b.residual_branch(x)), "residual_branch"),
    (lambda b, x: b.relu(b.residual_branch(x) + b.shortcut(x)), "residual_branch"),
    (lambda b, x: b.relu(_branch(b, x) + b.shortcut(x)), "shortcut"),
    (lambda b, x: b(x), "forward"),
    (lambda b, x: type(b).forward(b, x), "residual_branch"),
])
def test_calling_the_library_block_is_refused(answer, called):
    for check in (check_plain_forward, check_basic_block_forward):
        feedback = check(answer)
        assert not feedback.passed, (check.__name__, feedback)
        assert f"calls block.{called}(x)" in feedback.message and "yourself" in feedback.message


def test_each_wrong_decision_names_its_rule_and_what_the_check_measured():
    """The residual block's rules 4 to 6 (identity when F = 0, a non-negative output, a
    branch of both signs) come with the number the check measured, and the paper's result
    for the variants He et al. 2016 tried (Table 2, ResNet-110)."""
    early = check_basic_block_forward(SLIPS["ReLU before the addition"][0]).message
    assert "(rule 6)" in early and "smallest value 0.00" in early and "7.84 %" in early
    late = check_basic_block_forward(SLIPS["missing final ReLU"][0]).message
    assert "(rule 5)" in late and "% of your block's outputs are negative" in late
    none = check_basic_block_forward(SLIPS["forgot the shortcut"][0]).message
    assert "(rule 4)" in none and "differs from x by up to" in none
    bn_after = check_basic_block_forward(SLIPS["addition before bn2"][0]).message
    assert "(rule 4)" in bn_after and "8.17 %" in bn_after
    for message in (early, late, none, bn_after):  # a hint names the slip, not the answer
        assert "relu(F(x) + " not in message and "conv1 -> bn1" not in message


def test_a_forgotten_return_is_named_not_taken_for_an_unanswered_cell():
    def no_return(b, x):
        b.relu(_branch(b, x) + _shortcut(b, x))

    def plain_no_return(b, x):
        b.relu(_branch(b, x))

    for check, answer in ((check_basic_block_forward, no_return),
                          (check_plain_forward, plain_no_return)):
        feedback = check(answer)
        assert not feedback.passed and "`return` missing" in feedback.message, feedback
        assert "not attempted" not in feedback.message


def test_a_plain_block_that_calls_downsample_is_told_it_adds_nothing():
    feedback = check_plain_forward(lambda b, x: b.relu(_branch(b, x) + b.downsample(x)))
    assert not feedback.passed and "(rule 3)" in feedback.message, feedback
    assert "the shortcut is then x itself" not in feedback.message


def test_a_relu_on_the_projection_is_named_as_a_shortcut_slip():
    feedback = check_basic_block_forward(
        lambda b, x: b.relu(_branch(b, x) + (x if b.downsample is None
                                             else b.relu(b.downsample(x)))))
    assert not feedback.passed and "your shortcut goes through a ReLU" in feedback.message
    assert "rule 7" not in feedback.message  # not sent to look at F, which is right
