"""Plot helpers: what they draw (data, scales, labels), read back from the matplotlib axes."""

import matplotlib

matplotlib.use("Agg")


import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from resnet_edu.gradients import ACTIVATION, WEIGHT, GradientNorms, NormRow
from resnet_edu.plots import draw_block_shapes, plot_norms_vs_depth, plot_training_curves
from resnet_edu.shapes import (
    BlockSpec,
)


def _table(norms, kind=WEIGHT):
    return GradientNorms(tuple(NormRow(f"l{i}", i + 1, kind, n) for i, n in enumerate(norms)))


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_norms_vs_depth_draws_each_net_on_a_log_axis():
    ax = plot_norms_vs_depth({"plain-3": _table([1e-6, 1e-3, 1.0]),
                              "ResNet-3": _table([0.5, 0.7, 1.0])})
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["plain-3", "ResNet-3"]
    x, y = ax.get_lines()[0].get_data()
    assert list(x) == [1, 2, 3] and list(y) == [1e-6, 1e-3, 1.0]
    assert ax.get_title() and "depth" in ax.get_xlabel() and "log" in ax.get_ylabel()
    assert ax.get_lines()[0].get_color() != ax.get_lines()[1].get_color()


def test_zero_norms_are_left_out_and_labelled():
    ax = plot_norms_vs_depth({"plain-4": _table([0.0, 0.0, 1e-3, 1.0])})
    x, y = ax.get_lines()[0].get_data()
    assert list(x) == [3, 4] and list(y) == [1e-3, 1.0]
    assert "2 of 4 are 0" in ax.get_lines()[0].get_label()


def test_kind_selects_the_rows():
    rows = _table([1.0, 2.0]).rows + _table([3.0], ACTIVATION).rows
    ax = plot_norms_vs_depth({"net": GradientNorms(rows)}, kind=ACTIVATION)
    assert list(ax.get_lines()[0].get_ydata()) == [3.0]
    assert "block" in ax.get_xlabel()


def test_training_curves_dashed_train_bold_test_in_percent():
    ax = plot_training_curves({"plain-20": {"train_error": [0.5, 0.25],
                                            "test_error": [0.6, 0.3]}})
    train, test = ax.get_lines()
    assert train.get_linestyle() == "--" and test.get_linestyle() == "-"
    assert test.get_linewidth() > train.get_linewidth()
    assert list(train.get_xdata()) == [1, 2]
    assert list(test.get_ydata()) == pytest.approx([60.0, 30.0])
    assert ax.get_ylabel() == "error (%)" and ax.get_xlabel() == "epoch"


def test_training_curves_with_validation_a_final_test_and_chance():
    ax = plot_training_curves({"plain-56": {"train_error": [0.6, 0.4, 0.3],
                                            "val_error": [0.65, 0.45, 0.35],
                                            "test_error": 0.36}}, chance=0.9)
    train, val, test, chance = ax.get_lines()
    assert train.get_linestyle() == "--" and val.get_linestyle() == "-"
    assert list(val.get_xdata()) == [1, 2, 3]
    assert list(test.get_xdata()) == [3] and list(test.get_ydata()) == pytest.approx([36.0])
    assert test.get_marker() == "*" and test.get_linestyle() == "None"
    assert list(chance.get_ydata()) == pytest.approx([90.0, 90.0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["plain-56 train", "plain-56 val", "plain-56 test (end)", "chance (90 %)"]


def test_training_curves_take_tensors_and_numpy_numbers():
    import numpy as np

    ax = plot_training_curves({"resnet-20": {"val_error": torch.tensor([0.5, 0.25]),
                                             "test_error": np.float64(0.3)}})
    val, test = ax.get_lines()
    assert list(val.get_ydata()) == pytest.approx([50.0, 25.0])
    assert list(test.get_xdata()) == [2] and list(test.get_ydata()) == pytest.approx([30.0])


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="at least one"):
        plot_norms_vs_depth({})
    with pytest.raises(ValueError, match="at least one"):
        plot_training_curves({})
    with pytest.raises(ValueError, match="'train_error', 'val_error' or 'test_error', got "
                                         r"keys \['loss'\]"):
        plot_training_curves({"net": {"loss": [1.0]}})


def test_a_net_has_one_colour_in_every_figure():
    from resnet_edu.plots import net_colors as _colors

    alone = _colors(["plain-56", "ResNet-56"])
    family = _colors(["plain-20", "ResNet-20", "plain-56", "ResNet-56", "plain-110", "ResNet-110"])
    assert alone["plain-56"] == family["plain-56"] and alone["ResNet-56"] == family["ResNet-56"]
    assert len(set(family.values())) == 6


matplotlib.use("Agg")


def test_draw_block_shapes_colours_the_verdict():
    import matplotlib.pyplot as plt

    ax = draw_block_shapes(BlockSpec(shortcut="none"))
    assert "channels differ" in ax.get_title()
    ax2 = draw_block_shapes(BlockSpec(shortcut="B"))
    assert "shapes match" in ax2.get_title()
    texts = [t.get_text() for t in ax2.texts]
    assert "OK" in texts and any("32x16x16" in t for t in texts)
    ax3 = draw_block_shapes(BlockSpec(size=7, stride=3, padding=0, shortcut="B"))
    assert any("conv2 cannot run on the 2x2 map" in t.get_text() for t in ax3.texts)
    plt.close("all")
