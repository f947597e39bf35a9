"""Residual nets as paths (Veit et al. 2016): path counts, routes through a block, the gradient
per path length, lesions."""


import pytest
import torch

from resnet_edu.data import load_sample, normalize
from resnet_edu.ensembles import (
    accuracy_without,
    attenuation_per_block,
    block_input_gradients,
    downsampling_blocks,
    gradient_per_path_length,
    lesion_random_blocks,
    mean_path_length,
    path_counts,
    path_length_distribution,
    predicted_gradient_share,
    recalibrated_norms,
    residual_blocks,
    routed_forward,
    routes,
    share_between,
    total_gradient_per_path_length,
)
from resnet_edu.evaluation import evaluate
from resnet_edu.models import cifar_resnet


def test_path_counts_are_binomial():
    assert path_counts(3) == [1, 3, 3, 1] and sum(path_counts(9)) == 2**9
    assert sum(path_length_distribution(54)) == pytest.approx(1.0)
    assert total_gradient_per_path_length([1.0, 0.5, 0.25]) == [1.0, 1.0, 0.25]


@pytest.mark.parametrize("preact", [False, True])
def test_routes_keep_the_forward_values_and_restrict_the_gradient(preact):
    torch.manual_seed(0)
    net = cifar_resnet(8, preact=preact).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        for route in ("branch", "skip"):
            with routes(net, [route] * 3):
                assert torch.equal(net(x), ref)
    assert all("forward" not in b.__dict__ for b in residual_blocks(net))  # restored
    block = net.layer1[0]
    inp = torch.relu(torch.randn(2, 16, 8, 8)).requires_grad_(True)
    out = routed_forward(block, inp, "skip")
    out.sum().backward()
    assert all(p.grad is None for p in block.parameters())  # skip only: no branch gradient


def test_skip_only_gradient_is_unchanged_through_a_preactivation_stage():
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    pre = block_input_gradients(cifar_resnet(20, preact=True), x, y, route="skip")
    assert len(pre) == 10
    # identity shortcuts from block input 0 to 3, 4 to 6 and 7 to 9 (3 and 6 downsample)
    for a, b in ((0, 3), (4, 6), (7, 9)):
        assert pre[a] == pytest.approx(pre[b], rel=1e-5)  # Eq. 5's "1", exactly
    post = block_input_gradients(cifar_resnet(20), x, y, route="skip")
    assert post[0] < post[3]  # the ReLU after each addition masks the skip path


def test_gradient_per_path_length_and_lesions_on_a_small_net():
    torch.manual_seed(0)
    net = cifar_resnet(8)
    sample = load_sample()
    x, y = normalize(sample.test.images[:8]), sample.test.labels[:8]
    per_path = gradient_per_path_length(net, x, y, samples=2)
    assert len(per_path) == 4 and all(g > 0 for g in per_path)
    assert downsampling_blocks(net) == [1, 2]
    small = sample.test.subset(slice(0, 32))
    assert accuracy_without(net, small, []) == evaluate(net, small)["acc"]
    lesions = lesion_random_blocks(net, small, trials=2)
    assert sorted(lesions) == [0, 1, 2, 3] and len(lesions[1]) == 2 and len(lesions[3]) == 1
    with pytest.raises(ValueError, match="deleted block index"):
        accuracy_without(net, small, [3])
    with pytest.raises(ValueError, match="one route per block"), routes(net, ["skip"]):
        pass
    plain = cifar_resnet(8, residual=False)
    with pytest.raises(ValueError, match="no skip"):
        routed_forward(plain.layer1[0], torch.zeros(1, 16, 8, 8), "skip")
    deleted = routed_forward(plain.layer2[0], torch.ones(1, 16, 8, 8), "deleted")
    assert deleted.shape == (1, 32, 4, 4)  # option A: stride 2, zero-padded channels


@pytest.mark.parametrize("n, r", [(9, 0.844), (54, 0.3), (54, 1.0), (27, 2.5)])
def test_predicted_gradient_share_is_a_binomial_and_the_normalised_total(n, r):
    share = predicted_gradient_share(n, r)
    oracle = torch.distributions.Binomial(n, probs=torch.tensor(r / (1 + r), dtype=torch.float64))
    expected = oracle.log_prob(torch.arange(n + 1, dtype=torch.float64)).exp()
    torch.testing.assert_close(torch.tensor(share, dtype=torch.float64), expected)
    # the same as the total of a per-path gradient falling by r per block, normalised
    total = total_gradient_per_path_length([r**k for k in range(n + 1)])
    torch.testing.assert_close(torch.tensor(share), torch.tensor(total) / sum(total))
    assert mean_path_length(share) == pytest.approx(n * r / (1 + r))
    if r == 1.0:
        assert share == pytest.approx(path_length_distribution(n))


def test_attenuation_is_what_the_share_depends_on_not_the_depth():
    # the same r puts the mean at the same fraction of n, for 9 blocks and for 54
    r = attenuation_per_block([4.6 * 0.844**k for k in range(10)])
    assert r == pytest.approx(0.844)
    short, deep = predicted_gradient_share(9, r), predicted_gradient_share(54, r)
    assert mean_path_length(short) / 9 == pytest.approx(mean_path_length(deep) / 54)
    # Veit et al.'s 5-17 of 54 blocks holds little of it at r = 0.844 and most at r = 0.3
    assert share_between(deep, 5, 17) < 0.05 < 0.9 < share_between(
        predicted_gradient_share(54, 0.3), 5, 17)


def test_attenuation_fits_the_slope_of_noisy_gradients():
    gen = torch.Generator().manual_seed(0)
    noise = torch.exp(0.05 * torch.randn(28, generator=gen, dtype=torch.float64))
    per_path = [float(2.0 * 0.5**k * e) for k, e in enumerate(noise)]
    assert attenuation_per_block(per_path) == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("bad", [[1.0], [1.0, 0.0, 0.5], [1.0, float("nan")]])
def test_attenuation_rejects_what_is_no_gradient_per_path(bad):
    with pytest.raises(ValueError, match="expected two or more positive gradient norms"):
        attenuation_per_block(bad)


@pytest.mark.parametrize("r", [0, -1.0, "0.5"])
def test_predicted_share_rejects_a_bad_attenuation(r):
    with pytest.raises(ValueError, match=r"r must be a finite number > 0, got"):
        predicted_gradient_share(9, r)


def test_recalibrated_norms_estimate_the_statistics_the_net_now_sees_and_put_back_the_old():
    torch.manual_seed(0)
    net = cifar_resnet(8).eval()
    images = load_sample().test.subset(slice(0, 96))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    momentum = net.bn1.momentum
    with routes(net, ["both", "deleted", "both"]), recalibrated_norms(net, images, batch_size=32):
        # the plain average of the three batches' statistics: the first BN's input is conv1(x)
        h = net.conv1(normalize(images.images)).detach().split(32)  # 3 x (32, 16, 32, 32)
        torch.testing.assert_close(net.bn1.running_mean,
                                   torch.stack([b.mean((0, 2, 3)) for b in h]).mean(0))
        torch.testing.assert_close(net.bn1.running_var,
                                   torch.stack([b.var((0, 2, 3)) for b in h]).mean(0))
        deleted = residual_blocks(net)[1]
        assert deleted.bn1.running_var.sum() == deleted.bn1.running_var.numel()  # reset, unused
        assert net.bn1.momentum is None
        recalibrated = accuracy_without(net, images, [])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and net.bn1.momentum == momentum
    assert not net.training  # the mode is put back too
    # through accuracy_without: the same number as inside the `with`
    assert accuracy_without(net, images, [1], recalibrate=images) == recalibrated
    with pytest.raises(RuntimeError, match="inside"), recalibrated_norms(net, images):
        raise RuntimeError("an error inside")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_recalibrated_norms_needs_a_batchnorm():
    with pytest.raises(ValueError, match="no BatchNorm to recalibrate"), recalibrated_norms(
            cifar_resnet(8, norm_layer=torch.nn.Identity), load_sample().test.subset(slice(0, 8))):
        pass
