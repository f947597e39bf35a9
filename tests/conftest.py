import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_tasks():
    spec = importlib.util.spec_from_file_location("tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    """Deprecation warnings are errors, except those raised inside the Jupyter stack's own
    modules: the one rule of tasks.py (THEIR_DEPRECATIONS), for every test on both stacks."""
    for line in _load_tasks().pytest_warning_filters():
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of many tiny convs: one thread avoids thread-pool overhead."""
    from resnet_edu.course.exercise import one_thread as single_thread

    with single_thread():
        yield


@pytest.fixture(scope="session")
def tasks():
    """The repository's `tasks.py` (the lab, student and site commands), loaded as a module."""
    return _load_tasks()
