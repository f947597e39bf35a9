"""resnet_edu.landscape against oracles: a quadratic loss with a known Hessian, the filter
norms of the weights, and `evaluate` itself at the origin of the grid."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_edu.data import load_sample, normalize
from resnet_edu.evaluation import evaluate
from resnet_edu.landscape import (
    difference,
    extreme_eigenvalues,
    filter_normalize,
    filter_normalized_direction,
    grid,
    hessian_extremes,
    hessian_vector_product,
    lanczos,
    line,
    local_minima,
    moved,
)
from resnet_edu.models import cifar_resnet


@pytest.fixture(scope="module")
def images():
    return load_sample().test.subset(slice(0, 64))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return cifar_resnet(depth=8).eval()


def _symmetric(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues),
                                       generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def test_hessian_vector_products_and_extreme_eigenvalues_of_a_known_quadratic():
    a = _symmetric([3.0, 1.0, 0.5, -2.0])  # the Hessian of 0.5 x^T A x is A
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        return 0.5 * x @ a @ x

    v = torch.randn(4, dtype=torch.float64)
    (hv,) = hessian_vector_product(loss, [x], [v])
    torch.testing.assert_close(hv, a @ v)
    lam_max, lam_min = extreme_eigenvalues(loss, [x], iters=200)
    assert lam_max == pytest.approx(3.0, rel=1e-6) and lam_min == pytest.approx(-2.0, rel=1e-6)
    # a spectrum whose largest magnitude is negative: the two ends still come out in order
    b = _symmetric([1.0, -0.2, -4.0], seed=1)
    y = torch.randn(3, dtype=torch.float64, requires_grad=True)
    ends = extreme_eigenvalues(lambda: 0.5 * y @ b @ y, [y], iters=300)
    assert ends == pytest.approx((1.0, -4.0), rel=1e-6)


def test_a_filter_normalized_direction_has_the_filter_norms_of_the_weights(net):
    direction = filter_normalized_direction(net, seed=3)
    for (name, w), d in zip(net.named_parameters(), direction, strict=True):
        if w.ndim <= 1:  # BatchNorm's gamma and beta, biases: zero, as Li et al. set them
            assert torch.count_nonzero(d) == 0, name
        else:  # each output filter (conv) or row (linear) has its weight's norm
            torch.testing.assert_close(d.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1),
                                       msg=name)
    again = filter_normalized_direction(net, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(direction, again, strict=True))  # seeded
    with pytest.raises(ValueError, match=r"direction has 1 tensors, the weights 2"):
        filter_normalize([torch.ones(2)], [torch.ones(2), torch.ones(3)])
    with pytest.raises(ValueError, match=r"shape \(2, 3\) for a weight of shape \(3, 2\)"):
        filter_normalize([torch.ones(2, 3)], [torch.ones(3, 2)])


def test_the_grid_at_its_origin_is_evaluate_and_the_weights_come_back(net, images):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    d1, d2 = (filter_normalized_direction(net, seed=s) for s in (1, 2))
    surface = grid(net, d1, d2, [-0.5, 0.0, 0.5], [0.0, 0.25], images)
    plain = evaluate(net, images)
    assert surface["loss"].shape == (3, 2)
    assert surface["loss"][1, 0].item() == pytest.approx(plain["loss"], rel=1e-6)
    assert surface["acc"][1, 0].item() == plain["acc"]
    assert surface["loss"][0, 0] != surface["loss"][1, 0]  # the steps move the weights
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_point_of_the_line_is_the_net_with_its_weights_moved_by_hand(net, images):
    direction = filter_normalized_direction(net, seed=5)
    result = line(net, direction, [0.3], images)
    by_hand = cifar_resnet(depth=8).eval()
    by_hand.load_state_dict(net.state_dict())
    with torch.no_grad():
        for p, d in zip(by_hand.parameters(), direction, strict=True):
            p.add_(0.3 * d)
    assert result["loss"][0].item() == pytest.approx(evaluate(by_hand, images)["loss"],
                                                     rel=1e-5)
    start = cifar_resnet(depth=8)
    towards = difference(net, start)  # alpha = -1 along end - start is the start
    with moved(net, [(-1.0, towards)]):
        for p, q in zip(net.parameters(), start.parameters(), strict=True):
            torch.testing.assert_close(p, q)
    with pytest.raises(RuntimeError), moved(net, [(1.0, towards)]):
        raise RuntimeError("an error inside")
    torch.testing.assert_close(next(net.parameters()), next(iter(net.state_dict().values())))


def test_the_hessian_of_a_net_matches_a_dense_hessian_on_a_tiny_model(images):
    torch.manual_seed(0)
    tiny = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3), nn.Tanh(),
                         nn.Linear(3, 10))  # 79 parameters: a dense Hessian is cheap
    images = images.subset(slice(0, 16))
    x, y = normalize(images.images), images.labels
    params = list(tiny.parameters())
    sizes = [p.numel() for p in params]

    def flat_loss(theta: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = (c.view_as(p) for c, p in zip(theta.split(sizes), params, strict=True))
        hidden = torch.tanh(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1) @ w1.T + b1)
        return nn.functional.cross_entropy(hidden @ w2.T + b2, y)

    theta = torch.cat([p.detach().flatten() for p in params])
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, theta))
    lam_max, lam_min = hessian_extremes(tiny, images, iters=300)
    assert lam_max == pytest.approx(eig[-1].item(), rel=1e-3)
    assert lam_min == pytest.approx(eig[0].item(), rel=1e-2, abs=1e-4)
    # H v summed over batches of 5 images (weighted by their share) is the same Hessian
    assert hessian_extremes(tiny, images, iters=300, batch_size=5) == pytest.approx(
        (lam_max, lam_min), rel=1e-3, abs=1e-5)
    assert [p.grad for p in tiny.parameters()] == [None] * 4  # no gradients left behind


def test_lanczos_finds_both_ends_of_a_large_spectrum_in_few_products():
    n = 400  # a spectrum from -1 to 10 with the ends well apart from the bulk
    eigenvalues = [-1.0, *torch.linspace(-0.2, 4.0, n - 2).tolist(), 10.0]
    a = _symmetric(eigenvalues, seed=2)
    products = []

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        products.append(1)
        return [a @ v[0]]

    ritz = lanczos(hvp, [torch.zeros(n, dtype=torch.float64)], steps=40)
    assert len(products) == 40 and len(ritz) == 40
    assert ritz[-1].item() == pytest.approx(10.0, rel=1e-6)
    assert ritz[0].item() == pytest.approx(-1.0, rel=1e-3)
    assert torch.all(ritz[1:] >= ritz[:-1])  # ascending


def test_local_minima_counts_a_bowl_once_and_every_dip_of_a_rough_surface():
    axis = torch.linspace(-1, 1, 21)
    bowl = axis[:, None] ** 2 + axis[None, :] ** 2
    assert local_minima(bowl) == 1
    assert local_minima(bowl.tolist()) == 1  # stored grids are lists
    wave = torch.cos(6 * torch.pi * axis)
    egg_crate = bowl + wave[:, None] * wave[None, :]
    assert local_minima(egg_crate) > 10
    corner = torch.arange(9.0).view(3, 3)  # the lowest point in a corner counts too
    assert local_minima(corner) == 1
    with pytest.raises(ValueError, match=r"2-D grid of losses, got shape \(3,\)"):
        local_minima([1.0, 2.0, 3.0])
