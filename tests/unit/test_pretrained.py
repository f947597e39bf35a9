"""The shipped trained nets: sha256-checked, weights_only loading, their accuracy on the
shipped sample, and a sentence for a damaged or missing file."""

import json
import shutil

import pytest
import torch

from resnet_edu.checkpoints import CheckpointError
from resnet_edu.data import load_sample
from resnet_edu.evaluation import evaluate
from resnet_edu.locations import load_results
from resnet_edu.models import cifar_resnet
from resnet_edu.pretrained import NETS, load_pretrained, manifest, read_weights, weights_dir


@pytest.mark.parametrize("name", list(NETS))
def test_shipped_nets_load_safely_and_keep_their_accuracy(name):
    entry = manifest()[name]
    stored = load_results("small_nets.json")["nets"][name]
    assert "bench/train_small_nets.py" in entry["how_made"]
    model = load_pretrained(name)  # sha256 checked, torch.load(weights_only=True)
    assert not model.training
    acc = evaluate(model, load_sample().test)["acc"]
    # the stored figure was measured on the same 1,000 images with the same fp16 weights
    assert acc >= stored["sample_test_acc_fp16"] - 0.01, (acc, stored)
    assert acc > 0.3  # trained well past chance (10 %)
    assert (weights_dir() / entry["file"]).stat().st_size < 2_000_000


def test_damaged_or_missing_weights_are_refused_with_a_sentence(tmp_path):
    entry = manifest()["resnet20"]
    copy = tmp_path / "resnet20.pt"
    shutil.copy(weights_dir() / entry["file"], copy)
    assert read_weights(copy, entry["sha256"])  # intact
    copy.write_bytes(copy.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="damaged or not the shipped file"):
        read_weights(copy, entry["sha256"])
    with pytest.raises(CheckpointError, match="does not read as a PyTorch state_dict"):
        read_weights(copy)
    with pytest.raises(CheckpointError, match="no weights file"):
        load_pretrained("resnet20", tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="name must be one of"):
        load_pretrained("resnet32")
    (tmp_path / "manifest.json").write_text(json.dumps({}))
    with pytest.raises(FileNotFoundError, match="no weights manifest"):
        manifest(tmp_path / "nowhere")


def test_a_state_dict_you_trained_yourself_loads(tmp_path):
    torch.manual_seed(0)
    own = cifar_resnet(20, preact=True)
    torch.save(own.state_dict(), tmp_path / "mine.pt")
    loaded = load_pretrained("preact20", tmp_path / "mine.pt")
    assert torch.equal(loaded.fc.weight, own.fc.weight)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_pretrained("resnet20", tmp_path / "mine.pt")


def test_a_net_without_shipped_weights_says_how_to_get_them(monkeypatch):
    import resnet_edu.pretrained as pretrained

    monkeypatch.setattr(pretrained, "manifest", lambda folder=None: {})
    with pytest.raises(CheckpointError, match=r"no shipped weights for 'resnet56' yet .*"
                                              r"bench/train_family\.py"):
        pretrained.load_pretrained("resnet56")
