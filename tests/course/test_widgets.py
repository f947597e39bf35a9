"""LiveCurves redraws a live notebook's figure at most every `every_s` seconds, and always
after the first and the last epoch: a long run on a fast machine would otherwise send more
display messages than a client that reads them after the cell (nbval) can receive."""

import matplotlib
import pytest

import resnet_edu.course.widgets as live
from resnet_edu.runs import History

matplotlib.use("Agg")


class FakeHandle:
    def __init__(self):
        self.updates = 0

    def update(self, fig):
        self.updates += 1


@pytest.mark.parametrize("epochs, epoch_s, every_s, expected", [
    (60, 1.0, 10.0, 1 + 5 + 1),  # the first, one every 10 s (epochs 11, 21, .., 51), the last
    (5, 30.0, 10.0, 5),  # slow epochs: every one is drawn
    (1, 1.0, 10.0, 1),  # a one-epoch run: drawn once
])
def test_redraws_are_throttled_but_the_first_and_last_epoch_are_drawn(
        monkeypatch, epochs, epoch_s, every_s, expected):
    now = [0.0]
    handle = FakeHandle()
    shown = []
    monkeypatch.setattr(live.time, "perf_counter", lambda: now[0])
    import IPython.display

    monkeypatch.setattr(IPython.display, "display",
                        lambda fig, display_id=False: shown.append(fig) or handle)
    curves = live.LiveCurves(enabled=True, every_s=every_s)
    history = History({"epochs": epochs}, "test")
    drawn_after = []
    for epoch in range(1, epochs + 1):
        now[0] += epoch_s
        history.epochs.append({"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": 0.5,
                               "val_loss": 1.0, "val_acc": 0.5})
        before = curves.redraws
        curves(history)
        if curves.redraws > before:
            drawn_after.append(epoch)
    assert curves.redraws == expected == len(shown) + handle.updates
    assert drawn_after[0] == 1 and drawn_after[-1] == epochs


def test_disabled_curves_draw_nothing():
    curves = live.LiveCurves(enabled=False)
    curves(History({"epochs": 1}, "test", [{"epoch": 1, "train_loss": 1.0}]))
    assert curves.redraws == 0
