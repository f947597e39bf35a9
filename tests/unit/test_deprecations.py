"""Deprecation warnings are errors in the tests (tasks.THEIR_DEPRECATIONS aside), in pytest
and in every notebook kernel: our own code raises none on either stack."""

import subprocess
import sys
import warnings

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


def test_plots_hand_matplotlib_numpy_arrays():
    """numpy 2 asks a tensor's __array__ for a copy keyword, which torch's lacks: handing a
    tensor to imshow warns (an error in a later numpy). Our plots convert first."""
    import matplotlib.pyplot as plt

    from resnet_edu.evaluation import confusion_matrix
    from resnet_edu.plots import plot_confusion_matrix

    matrix = confusion_matrix(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    with pytest.warns(DeprecationWarning, match="__array__"):  # the trap itself, on a tensor
        plt.imshow(100 * matrix.double())
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        plot_confusion_matrix(matrix)
        plt.gcf().canvas.draw()
    plt.close("all")


@pytest.mark.parametrize("module, raises", [("resnet_edu.shapes", True), ("__main__", True),
                                            ("matplotlib.cbook", True),
                                            ("ipykernel.jsonutil", False),
                                            ("pyparsing.util", False)])
def test_the_kernel_start_up_file_makes_our_deprecations_errors(tasks, tmp_path, module, raises):
    startup = tasks.kernel_profile(tmp_path) / "profile_default" / "startup"
    (code,) = [p.read_text() for p in startup.glob("*.py")]
    probe = (f"{code}\nimport warnings\n"
             f"try:\n    warnings.warn_explicit('old', DeprecationWarning, 'f.py', 1, {module!r})\n"
             "    print('ignored')\nexcept DeprecationWarning:\n    print('error')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ("error" if raises else "ignored")
