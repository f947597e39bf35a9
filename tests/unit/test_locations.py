"""Where files are read from and written to, for a checkout and for an installed package:
the shipped sample and results, the per-user cache, the order CIFAR-10 is looked for in,
and the one-sentence fallback to the sample."""

import json
import re
import shutil
import tomllib
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from resnet_edu import data as data_module
from resnet_edu import locations
from resnet_edu.data import (
    ENV_VAR,
    LAYOUT,
    SAMPLE_DIR,
    DatasetError,
    DatasetNotFound,
    data_dirs,
    find_cifar10,
    load_cifar10_or_sample,
    load_sample,
)
from resnet_edu.locations import (
    checkout_root,
    default_data_dir,
    load_results,
    results_file,
    run_dir,
    shipped,
    user_cache_dir,
)
from resnet_edu.pretrained import load_pretrained, weights_dir

ROOT = Path(__file__).resolve().parents[2]


def package_data_patterns() -> list[str]:
    """What pyproject.toml ships in the wheel, relative to resnet_edu/."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-data"]["resnet_edu"]


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """Pretend the package is installed from a wheel: no checkout around it, its shipped
    files in a package folder under tmp_path/site, the user cache under tmp_path/cache."""
    package = tmp_path / "site" / "resnet_edu"
    shutil.copytree(locations.SHIPPED_DIR, package / "shipped")
    monkeypatch.setattr(locations, "SHIPPED_DIR", package / "shipped")
    monkeypatch.setattr(locations, "checkout_root", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return package


def test_a_checkout_reads_the_package_data_in_place():
    assert checkout_root() == ROOT
    shipped_dir = ROOT / "resnet_edu" / "shipped"
    assert shipped("cifar10-sample") == shipped_dir / "cifar10-sample" == SAMPLE_DIR
    assert results_file("degradation_cpu.json") == shipped_dir / "results" / "degradation_cpu.json"
    assert default_data_dir() == ROOT / "data" / "cifar10"


def test_the_wheel_carries_every_shipped_file():
    """A checkout and a wheel read the same files: each one in resnet_edu/shipped/ matches a
    package-data pattern of pyproject.toml (the wheel test checks the built wheel itself)."""
    package = ROOT / "resnet_edu"
    files = [p for p in (package / "shipped").rglob("*")
             if p.is_file() and not p.name.startswith(".")]
    assert len(files) > 10
    patterns = package_data_patterns()
    missed = [str(p.relative_to(package)) for p in files
              if not any(p.relative_to(package).match(pattern) for pattern in patterns)]
    assert not missed, f"shipped files the wheel would leave out: {missed}"


def test_an_installed_package_reads_its_own_copies(installed):
    assert shipped("cifar10-sample") == installed / "shipped" / "cifar10-sample"
    assert results_file("softmax_vs_ce.json").parent == installed / "shipped" / "results"
    original = ROOT / "resnet_edu" / "shipped" / "results"
    degradation = json.loads((original / "degradation_cpu.json").read_text())
    assert load_results("degradation_cpu.json") == degradation
    bench = (original / "bench_cpu.jsonl").read_text().splitlines()
    assert load_results("bench_cpu.jsonl") == [json.loads(line) for line in bench if line]
    assert weights_dir() == installed / "shipped" / "weights"
    assert load_pretrained("resnet20").fc.weight.dtype == torch.float32  # checksum checked


def test_missing_shipped_files_and_unknown_names_are_explained(installed):
    shutil.rmtree(installed / "shipped" / "results")
    with pytest.raises(FileNotFoundError, match="reinstall the package"):
        shipped("results")
    with pytest.raises(ValueError, match="one of \\['cifar10-sample', 'results', 'weights'\\]"):
        shipped("checkpoints")


def test_unknown_results_file_lists_the_ones_there():
    with pytest.raises(FileNotFoundError, match=r"degradation_cpu\.json"):
        results_file("degradation_gpu.json")


def test_every_results_file_a_notebook_loads_ships():
    names = {m for nb in (ROOT / "notebooks").glob("*.ipynb")
             for m in re.findall(r'load_results\(\\"([\w.]+)\\"\)', nb.read_text())}
    assert names >= {"degradation_cpu.json", "softmax_vs_ce.json"}
    patterns = package_data_patterns()
    for name in names:
        assert any(Path("shipped/results", name).match(p) for p in patterns), name
        assert results_file(name).is_file()


def test_user_cache_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "resnet-edu"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid by the XDG rules
    assert user_cache_dir() == Path.home() / ".cache" / "resnet-edu"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "resnet-edu"


def test_installed_package_writes_to_the_user_cache_never_into_itself(installed, tmp_path):
    cache = tmp_path / "cache" / "resnet-edu"
    assert default_data_dir() == cache / "cifar10"
    assert run_dir("04_smoke") == cache / "runs" / "04_smoke"
    for path in (default_data_dir(), run_dir("04_smoke")):
        assert not path.is_relative_to(installed.parent)


def test_run_dir_in_a_checkout(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT / "notebooks")
    assert run_dir("04_cpu") == Path("..") / "runs" / "04_cpu"
    monkeypatch.chdir(tmp_path)  # outside the checkout: the full path
    assert run_dir("04_cpu") == ROOT / "runs" / "04_cpu"
    for bad in ("", "../x", "a/b"):
        with pytest.raises(ValueError, match="plain folder name"):
            run_dir(bad)


def test_lookup_order_data_dir_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setattr(data_module, "DEFAULT_DIR", tmp_path / "default")
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert data_dirs() == [tmp_path / "default"]
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_dirs() == [tmp_path / "env", tmp_path / "default"]
    assert data_dirs(tmp_path / "arg") == [tmp_path / "arg", tmp_path / "default"]


def test_a_download_goes_into_the_first_place_looked(monkeypatch, tmp_path):
    roots = []

    def fake_cifar10(root, train, download):  # what torchvision would do, offline
        roots.append(Path(root))
        shutil.copytree(SAMPLE_DIR / LAYOUT, Path(root) / LAYOUT)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    monkeypatch.setattr(data_module, "DEFAULT_DIR", tmp_path / "default")
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_cifar10(download=True) == tmp_path / "default" / LAYOUT
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setattr(data_module, "DEFAULT_DIR", tmp_path / "default2")
    assert find_cifar10(download=True) == tmp_path / "env" / LAYOUT
    assert roots == [tmp_path / "default", tmp_path / "env"]


def _offline(monkeypatch, tmp_path):
    def no_network(root, train, download):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    monkeypatch.setattr(data_module, "DEFAULT_DIR", tmp_path / "default")
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_without_the_full_set_it_says_so_in_one_sentence_and_uses_the_sample(
        monkeypatch, tmp_path, capsys):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(DatasetNotFound) as e:
        find_cifar10(download=True)
    assert e.value.looked == [tmp_path / "default"] and "URLError" in e.value.download_error

    got = load_cifar10_or_sample(download=True)
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and said.count(". ") == 0, said  # one sentence, one line
    assert str(tmp_path / "default") in said  # where it looked
    assert "the download failed (URLError" in said
    assert "python -m resnet_edu download" in said and f"${ENV_VAR}" in said  # how to get it
    assert "continuing on the sample" in said and "2,000 training and 1,000 test images" in said
    sample = load_sample()
    assert got.source == sample.source == str(SAMPLE_DIR / LAYOUT)
    assert torch.equal(got.train.images, sample.train.images)


def test_without_download_it_does_not_claim_one_failed(monkeypatch, tmp_path, capsys):
    _offline(monkeypatch, tmp_path)
    load_cifar10_or_sample(download=False)
    said = capsys.readouterr().out
    assert "download failed" not in said and "continuing on the sample" in said


def test_a_copy_that_is_found_is_used_silently(monkeypatch, tmp_path, capsys):
    _offline(monkeypatch, tmp_path)
    shutil.copytree(SAMPLE_DIR / LAYOUT, tmp_path / "copy" / LAYOUT)
    got = load_cifar10_or_sample(tmp_path / "copy", download=True, val_size=100)
    assert capsys.readouterr().out == ""
    assert got.source == str(tmp_path / "copy" / LAYOUT) and len(got.val) == 100


def test_a_broken_copy_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    shutil.copytree(SAMPLE_DIR / LAYOUT, tmp_path / "copy" / LAYOUT)
    (tmp_path / "copy" / LAYOUT / "data_batch_2").unlink()
    with pytest.raises(DatasetError, match="missing data_batch_2") as e:
        load_cifar10_or_sample(tmp_path / "copy")
    assert not isinstance(e.value, DatasetNotFound)


def test_sample_and_results_from_any_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert len(load_sample().test) == 1000
    assert "nets" in load_results("degradation_cpu.json")
