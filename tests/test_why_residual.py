"""Notebook 06's package code: shattered gradients, paths and lesions, the shipped nets, and
the exercise checks (right answers pass, the usual wrong ones get their hint)."""

import json
import shutil
import time

import pytest
import torch

from resnet_edu.checkpoints import CheckpointError
from resnet_edu.course.nb06_why_residual import (
    check_lag1,
    check_lesion_prediction,
    check_routed_forward,
    check_shattering_prediction,
)
from resnet_edu.data import load_sample, normalize
from resnet_edu.ensembles import (
    accuracy_without,
    block_input_gradients,
    downsampling_blocks,
    gradient_per_path_length,
    lesion_random_blocks,
    path_counts,
    path_length_distribution,
    residual_blocks,
    routed_forward,
    routes,
    total_gradient_per_path_length,
)
from resnet_edu.evaluation import evaluate
from resnet_edu.locations import load_results
from resnet_edu.models import cifar_resnet
from resnet_edu.pretrained import NETS, load_pretrained, manifest, read_weights, weights_dir
from resnet_edu.shattered import (
    autocorrelation,
    fc_net,
    input_gradients,
    lag1_correlation,
    predicted_rates,
)

# --- shattered gradients ----------------------------------------------------------------------


def test_fc_net_maps_a_sweep_to_one_output_per_point():
    x, g = input_gradients(fc_net(3, "residual-bn"))
    assert x.shape == g.shape == (256,)
    assert float(x[0]) == -2.0 and float(x[-1]) == 2.0


def test_per_point_gradients_with_bn_do_not_mix_points():
    torch.manual_seed(0)
    net = fc_net(4, "plain-bn")
    x, g = input_gradients(net)
    xs = x.clone().reshape(-1, 1).requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda v: net(v).reshape(-1), xs).reshape(256, 256)
    assert torch.allclose(torch.diagonal(jac), g, atol=1e-5)
    assert (jac - torch.diag(torch.diagonal(jac))).abs().max() < 1e-6  # no cross terms


def test_zero_biases_leave_two_gradient_values_at_any_depth():
    torch.manual_seed(0)
    _, g = input_gradients(fc_net(30, "plain", zero_bias=True))
    assert g.unique().numel() <= 2


def test_plain_bn_shatters_and_residual_bn_does_not():
    deep_plain = sum(lag1_correlation(24, "plain-bn", s) for s in range(2)) / 2
    deep_res = sum(lag1_correlation(24, "residual-bn", s) for s in range(2)) / 2
    assert abs(deep_plain) < 0.3 < 0.6 < deep_res
    assert lag1_correlation(1, "plain-bn") > 0.9


def test_autocorrelation():
    r = autocorrelation(torch.sin(torch.linspace(0, 6, 256)), 3)
    assert float(r[0]) == pytest.approx(1.0) and float(r[1]) > 0.95
    noise = autocorrelation(torch.randn(4096, generator=torch.Generator().manual_seed(0)), 1)
    assert abs(float(noise[1])) < 0.05
    with pytest.raises(ValueError, match="constant"):
        autocorrelation(torch.ones(10))
    with pytest.raises(ValueError, match="kind must be one of"):
        fc_net(3, "dense")
    assert predicted_rates([1, 4])["plain-bn"] == [0.5, 2.0**-4]


# --- paths and lesions -------------------------------------------------------------------------


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


# --- the shipped nets ---------------------------------------------------------------------------


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


# --- exercise checks ----------------------------------------------------------------------------


def test_check_lag1():
    def right(g):
        d = g.double() - g.double().mean()
        return float((d[:-1] * d[1:]).sum() / (d * d).sum())

    def no_mean(g):
        return float((g[:-1] * g[1:]).sum() / (g * g).sum())

    assert check_lag1(right).passed
    wrong = check_lag1(no_mean)
    assert not wrong.passed and "offset itself looks like correlation" in wrong.message
    assert "not attempted" in check_lag1(lambda g: ...).message


def test_check_routed_forward():
    def right(block, x, route):
        f, s = block.residual_branch(x), block.shortcut(x)
        if route == "branch":
            s = s.detach()
        elif route == "skip":
            f = f.detach()
        return block.relu(f + s)

    def swapped(block, x, route):
        return right(block, x, {"branch": "skip", "skip": "branch"}[route])

    def no_relu(block, x, route):
        return block.residual_branch(x) + block.shortcut(x)

    assert check_routed_forward(right).passed
    assert "gradient" in check_routed_forward(swapped).message
    assert "output differs" in check_routed_forward(no_relu).message
    assert "not attempted" in check_routed_forward(lambda b, x, r: ...).message


def test_predictions_are_judged_against_the_measurement_they_are_given():
    assert check_shattering_prediction("near 0", measured=-0.04).passed
    assert "it is 'near 1'" in check_shattering_prediction("near 0", measured=0.93).message
    assert "first" in check_shattering_prediction(...).message
    assert "one of" in check_shattering_prediction("zero", measured=0.0).message
    chance = [0.1, 0.11, 0.09]
    assert check_lesion_prediction(10, measured=chance).passed
    assert "too high" in check_lesion_prediction(45, measured=chance).message
    assert "too low" in check_lesion_prediction(45, measured=[0.8, 0.9]).message
    assert "first" in check_lesion_prediction(...).message


def test_check_lag1_names_the_pearson_correlation_of_the_halves():
    def pearson(g):
        return float(torch.corrcoef(torch.stack([g[:-1], g[1:]]))[0, 1])

    feedback = check_lag1(pearson)
    assert not feedback.passed and "Pearson correlation of the two shifted halves" in \
        feedback.message


def test_check_routed_forward_explains_no_grad_on_the_identity_and_refuses_the_library():
    def no_grad_instead_of_detach(block, x, route):
        if route == "branch":
            f = block.residual_branch(x)
            with torch.no_grad():
                s = block.shortcut(x)
        else:
            s = block.shortcut(x)
            with torch.no_grad():
                f = block.residual_branch(x)
        return block.relu(f + s)

    feedback = check_routed_forward(no_grad_instead_of_detach)
    assert not feedback.passed and "returns x itself" in feedback.message
    assert "torch.no_grad()" in feedback.message
    assert "same values cut from the graph?" in feedback.message  # the slip, not the answer
    feedback = check_routed_forward(routed_forward)
    assert not feedback.passed and "library's own routed_forward" in feedback.message


def test_check_lesion_prediction_names_a_fraction_given_for_a_percentage():
    feedback = check_lesion_prediction(0.1, measured=[0.1, 0.11, 0.09])
    assert not feedback.passed and "in percent" in feedback.message and "10 %" in \
        feedback.message
    assert check_lesion_prediction(10, measured=[0.1, 0.11, 0.09]).passed


def test_check_shattering_prediction_measures_cheaply_without_a_value():
    start = time.perf_counter()
    assert check_shattering_prediction("near 0").passed
    assert time.perf_counter() - start < 10


LAG1_SLIPS = {  # a typical wrong decision about the centre or the denominator: its hint
    "no mean taken out": (lambda g: float((g[:-1] * g[1:]).sum() / (g * g).sum()),
                          "(rule 1)"),
    "no denominator": (lambda g: float(((g - g.mean())[:-1] * (g - g.mean())[1:]).sum()),
                       "multiplying g by 10 changes your value"),
    "means over different counts": (
        lambda g: float(((g - g.mean())[:-1] * (g - g.mean())[1:]).mean()
                        / (g - g.mean()).pow(2).mean()),
        "off by the factor 256/255"),
    "Pearson of the halves": (
        lambda g: float(torch.corrcoef(torch.stack([g[:-1], g[1:]]))[0, 1]), "(rule 3)"),
    "a list instead of a number": (lambda g: [0.5], "one number"),
}


@pytest.mark.parametrize("name", LAG1_SLIPS)
def test_each_wrong_lag1_decision_gets_the_rule_it_breaks(name):
    answer, hint = LAG1_SLIPS[name]
    feedback = check_lag1(answer)
    assert not feedback.passed and hint in feedback.message, feedback.message
    assert "sum_i" not in feedback.message  # no formula handed out


def test_other_right_lag1_answers_pass():
    def with_var(g):  # unbiased variance times (N - 1): the same sum of squares
        d = g.double() - g.double().mean()
        return float((d[:-1] * d[1:]).sum() / (g.double().var() * (g.numel() - 1)))

    assert check_lag1(with_var).passed
    def as_tensor(g):  # a 0-d tensor is a number
        d = g - g.mean()
        return (d[:-1] * d[1:]).sum() / (d * d).sum()

    assert check_lag1(as_tensor).passed


def _right_route(block, x, route):
    f, s = block.residual_branch(x), block.shortcut(x)
    if route == "branch":
        s = s.detach()
    elif route == "skip":
        f = f.detach()
    return block.relu(f + s)


def _skip_under_no_grad(block, x, route):  # torch.no_grad() on the branch works for 'skip'
    if route == "skip":
        with torch.no_grad():
            f = block.residual_branch(x)
        return block.relu(f + block.shortcut(x))
    return _right_route(block, x, route)


ROUTE_SLIPS = {  # a typical wrong decision about what to cut and where: its hint
    "the terms swapped": (
        lambda b, x, r: _right_route(b, x, {"branch": "skip", "skip": "branch"}[r]),
        "it matches route 'skip'"),
    "a term zeroed, not cut": (
        lambda b, x, r: b.relu(b.residual_branch(x) * (r != "skip")
                               + b.shortcut(x) * (r != "branch")),
        "which is a lesion"),
    "the output detached": (lambda b, x, r: _right_route(b, x, "both").detach(),
                            "carries no gradient at all"),
    "block(x) whatever the route": (lambda b, x, r: b(x), "flows through both terms"),
    "the ReLU forgotten": (lambda b, x, r: b.residual_branch(x) + b.shortcut(x),
                           "the sum before the block's last ReLU"),
    "a list returned": (lambda b, x, r: [b(x)], "as a tensor"),
}


@pytest.mark.parametrize("name", ROUTE_SLIPS)
def test_each_wrong_routing_decision_gets_what_the_check_measured(name):
    answer, hint = ROUTE_SLIPS[name]
    feedback = check_routed_forward(answer)
    assert not feedback.passed and hint in feedback.message, feedback.message
    assert ".detach()" not in feedback.message  # the hint names the slip, not the answer


def test_no_grad_around_the_branch_is_a_right_answer_for_skip():
    assert check_routed_forward(_skip_under_no_grad).passed


def test_wrappers_around_the_package_s_answers_are_refused():
    """Issue 28, point 7: a thin wrapper around the library's own answer is refused, however
    it was imported or named."""
    from resnet_edu.ensembles import routed_forward as rf
    from resnet_edu.shattered import autocorrelation as ac

    fb = check_lag1(lambda g: float(ac(g, 1)[1]))
    assert not fb.passed and "calls autocorrelation" in fb.message
    fb = check_routed_forward(lambda block, x, route: rf(block, x, route))
    assert not fb.passed and "calls routed_forward" in fb.message


def test_a_net_without_shipped_weights_says_how_to_get_them(monkeypatch):
    import resnet_edu.pretrained as pretrained

    monkeypatch.setattr(pretrained, "manifest", lambda folder=None: {})
    with pytest.raises(CheckpointError, match=r"no shipped weights for 'resnet56' yet .*"
                                              r"bench/train_family\.py"):
        pretrained.load_pretrained("resnet56")
