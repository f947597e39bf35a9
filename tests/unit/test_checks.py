"""Argument and input checks: each error names the argument, says what it must be and shows
what came; the command line renames the argument to its flag without touching the rest."""

import math

import pytest
import torch

from resnet_edu.checks import (
    ArgumentError,
    check_batch,
    check_device,
    check_float,
    check_images,
    check_int,
)


@pytest.mark.parametrize("value, came", [(0, "got 0"), (True, "got True (bool)"),
                                         (2.0, "got 2.0 (float)"), ("3", "got '3' (str)")])
def test_check_int_says_what_it_expected_and_what_came(value, came):
    with pytest.raises(ArgumentError) as e:
        check_int("epochs", value, low=1)
    assert str(e.value) == f"epochs must be an integer >= 1, {came}"
    assert e.value.name == "epochs" and isinstance(e.value, ValueError)
    assert check_int("epochs", 3, low=1) == 3


@pytest.mark.parametrize("value, limits, expected", [
    (0, {"low": 0, "low_open": True}, "lr must be a finite number > 0, got 0"),
    (1.0, {"low": 0, "high": 1, "high_open": True},
     "lr must be a finite number in [0, 1), got 1.0"),
    (math.nan, {}, "lr must be a finite number, got nan"),
    (math.inf, {"low": 0}, "lr must be a finite number >= 0, got inf"),
    (None, {}, "lr must be a finite number, got None (NoneType)"),
])
def test_check_float_intervals_and_non_finite_values(value, limits, expected):
    with pytest.raises(ArgumentError) as e:
        check_float("lr", value, **limits)
    assert str(e.value) == expected
    assert check_float("lr", 1, low=0) == 1.0 and isinstance(check_float("lr", 1), float)


def test_renamed_keeps_what_was_required():
    with pytest.raises(ArgumentError) as e:
        check_int("seed", -1, low=0, high=9)
    flag = e.value.renamed("--seed")
    assert str(flag) == "--seed must be an integer in [0, 9], got -1"
    assert (flag.name, flag.requirement) == ("--seed", e.value.requirement)


def test_check_device_knows_the_kinds_and_what_this_machine_has():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"--device must be 'cuda', 'mps' or 'cpu'.*got 'gpu'"):
        check_device("gpu", "--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU on this machine"):
            check_device("cuda")


def test_image_checks_say_the_shape_or_dtype_that_came():
    with pytest.raises(ValueError, match=r"4-D batch .* got a 3-D tensor of shape \(3, 8, 8\) "
                                         r"\(add a batch dimension"):
        check_batch(torch.zeros(3, 8, 8), 3, "net")
    with pytest.raises(ValueError, match=r"expects 3 input channels, got 1"):
        check_batch(torch.zeros(2, 1, 8, 8), 3, "net")
    with pytest.raises(TypeError, match=r"floating-point images, got torch.uint8: convert"):
        check_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 3, "net")
    with pytest.raises(TypeError, match=r"float32 weights and expects torch.float32 images, "
                                        r"got torch.float64"):
        check_images(torch.zeros(2, 3, 8, 8, dtype=torch.float64), 3, "net", torch.float32)
    check_images(torch.zeros(2, 3, 8, 8), 3, "net", torch.float32)  # the right batch passes
