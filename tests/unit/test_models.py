"""Our models against torchvision's (the oracle), and the paper's parameter counts."""

from functools import partial

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from resnet_edu import checks, models
from resnet_edu.blocks import BasicBlock, PreActBlock, ResidualBlock
from resnet_edu.data import load_sample, normalize
from resnet_edu.residual_trace import residual_block_names

IMAGENET = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_have_torchvisions_structure(name):
    """Keys, order, shapes and counts, on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        ours, theirs = getattr(models, name)(), getattr(tvm, name)()
    assert models.count_parameters(ours) == IMAGENET[name]
    assert models.count_parameters(theirs) == IMAGENET[name]
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)  # same keys, same order
    assert all(ours_sd[k].shape == theirs_sd[k].shape for k in ours_sd)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_models_compute_what_torchvision_computes(name):
    """Weights from torchvision into ours and back (strict), the same outputs both ways."""
    ours, theirs = getattr(models, name)(), getattr(tvm, name)()
    x = torch.randn(2, 3, 64, 64)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # torchvision -> ours
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)

    fresh = getattr(tvm, name)()
    for m in ours.modules():  # make our BN statistics non-trivial before copying back
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    fresh.load_state_dict(ours.state_dict(), strict=True)  # ours -> torchvision
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ours(x), atol=1e-5, rtol=0)


# He et al. 2015, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M parameters (option A)
PAPER_CIFAR = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


@pytest.mark.parametrize("depth", PAPER_CIFAR)
def test_cifar_family_parameter_counts_match_the_paper(depth):
    n = models.count_parameters(models.cifar_resnet(depth))
    assert abs(n - PAPER_CIFAR[depth]) / PAPER_CIFAR[depth] < 0.02
    # the plain net of the same depth has exactly the same parameters (option A is free)
    assert models.count_parameters(models.cifar_resnet(depth, residual=False)) == n


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_layer_count_is_depth(depth):
    m = models.cifar_resnet(depth)
    weighted = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == depth  # 6n+2: stem conv, 6n block convs, fc
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_cifar():
    m = models.resnet18_cifar()
    assert models.count_parameters(m) == 11_173_962
    assert isinstance(m.maxpool, nn.Identity) and m.conv1.kernel_size == (3, 3)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    small = models.resnet18_cifar(width=16, num_classes=100)
    assert small.layer4[0].conv1.out_channels == 128
    assert small(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_shortcut_options_change_only_the_projections():
    a, b, c = (models.resnet18(shortcut=s) for s in "ABC")
    # A has no projection parameters; C projects in every block
    assert models.count_parameters(a) < models.count_parameters(b) < models.count_parameters(c)
    assert sum(isinstance(m, nn.Sequential) and "downsample" in n
               for n, m in c.named_modules()) == 8
    for m in (a, b, c):
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


PLAIN_NETS = {
    "resnet18": lambda **kw: models.resnet18(width=4, **kw),
    "resnet50": lambda **kw: models.resnet50(width=4, **kw),
    "cifar_resnet": lambda **kw: models.cifar_resnet(8, shortcut="B", **kw),
    "cifar_resnet_preact": lambda **kw: models.cifar_resnet(8, preact=True, **kw),
}


@pytest.mark.parametrize("make", PLAIN_NETS.values(), ids=PLAIN_NETS)
def test_residual_false_removes_every_shortcut(make):
    """Traced, not read from attributes: the plain net makes no residual addition at all."""
    x = torch.randn(2, 3, 32, 32)
    res, plain = make().eval(), make(residual=False).eval()
    n_blocks = sum(isinstance(m, ResidualBlock) for m in res.modules())
    assert len(residual_block_names(res, x)) == n_blocks > 0
    assert residual_block_names(plain, x) == []
    assert "downsample" not in " ".join(plain.state_dict())


def test_a_block_that_cannot_drop_its_shortcut_is_refused():
    class Custom(nn.Module):
        expansion = 1

    for residual in (True, False):
        with pytest.raises(ValueError, match="block must be a ResidualBlock subclass"):
            models.ResNet(Custom, [1, 1, 1, 1], residual=residual)


def test_plain_and_residual_differ_only_by_the_shortcut():
    """Same seed -> identical weights; outputs differ because of the added identity."""
    torch.manual_seed(1)
    res = models.cifar_resnet(20)
    torch.manual_seed(1)
    plain = models.cifar_resnet(20, residual=False)
    res_sd, plain_sd = res.state_dict(), plain.state_dict()
    assert list(res_sd) == list(plain_sd)
    assert all(torch.equal(res_sd[k], plain_sd[k]) for k in res_sd)


def test_zero_init_residual_makes_every_block_start_as_identity():
    m = models.cifar_resnet(20, shortcut="B", zero_init_residual=True).eval()
    blk = m.layer1[1]
    x = torch.relu(torch.randn(2, 16, 32, 32))  # block inputs are post-ReLU
    with torch.no_grad():
        assert torch.equal(blk.residual_branch(x), torch.zeros_like(x))
        torch.testing.assert_close(blk(x), x)
    tv = tvm.resnet50(zero_init_residual=True)
    ours = models.resnet50(zero_init_residual=True)
    for (k, v), (_, w) in zip(ours.state_dict().items(), tv.state_dict().items(), strict=True):
        if k.endswith("bn3.weight"):
            assert torch.equal(v, w)


def test_preact_cifar_net_normalizes_after_its_last_block():
    m = models.cifar_resnet(20, preact=True, width=8).eval()
    assert isinstance(m.layer1[0], PreActBlock) and not hasattr(m, "bn1")
    assert isinstance(m.final_norm, nn.BatchNorm2d) and m.final_norm.num_features == 32
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 10)
    with torch.no_grad():  # final_norm outputs 0 -> ReLU 0 -> the logits are fc's bias
        m.final_norm.weight.zero_(), m.final_norm.bias.zero_()
        torch.testing.assert_close(m(x), m.fc.bias.expand(2, 10))


@pytest.mark.parametrize("norm_layer", [nn.BatchNorm2d, partial(nn.GroupNorm, 4)])
@pytest.mark.parametrize("preact", [False, True])
def test_zero_init_residual_works_with_batch_and_group_norm(norm_layer, preact):
    m = models.cifar_resnet(8, shortcut="B", preact=preact, width=8, norm_layer=norm_layer,
                            zero_init_residual=True)
    blocks = [b for b in m.modules() if isinstance(b, ResidualBlock)]
    assert len(blocks) == 3 and all(not b.last_layer().weight.any() for b in blocks)
    x = torch.relu(torch.randn(2, 8, 32, 32))  # block inputs are post-ReLU
    with torch.no_grad():
        torch.testing.assert_close(m.layer1[0](x), x)  # each block starts as the identity


def test_zero_init_residual_without_a_learnable_scale_raises():
    with pytest.raises(ValueError, match="without a learnable weight"):
        models.cifar_resnet(8, norm_layer=nn.Identity, zero_init_residual=True)


def test_batchnorm_can_be_turned_off():
    m = models.cifar_resnet(20, norm_layer=nn.Identity)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert torch.isfinite(m(torch.randn(2, 3, 32, 32))).all()


def test_default_init_keeps_pytorch_defaults():
    torch.manual_seed(0)
    ours = models.cifar_resnet(20, init="default").conv1.weight
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 16, 3, padding=1, bias=False).weight
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: models.cifar_resnet(21), r"6n\+2 with n >= 1.*got"),
        (lambda: models.cifar_resnet(2), r"6n\+2 with n >= 1.*got"),
        (lambda: models.cifar_resnet(20, shortcut="E"), "shortcut must be one of"),
        (lambda: models.resnet18(shortcut="bogus"), "shortcut must be one of"),
        (lambda: models.resnet18_cifar(width=0), r"width must be an integer >= 1, got 0"),
        (lambda: models.cifar_resnet(20, width=-1), "width must be an integer >= 1"),
        (lambda: models.resnet18(num_classes=0), "num_classes"),
        (lambda: models.cifar_resnet(20, init="xavier"), "init must be one of"),
        (lambda: models.ResNet(BasicBlock, [2, 2, 2]), "4 positive block counts"),
        (lambda: models.ResNet(BasicBlock, [2, 2, True, 2]), r"layers\[2\] must be an integer"),
        (lambda: BasicBlock(0, 4), "inplanes must be an integer >= 1"),
    ],
)
def test_bad_options_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "model, x, message",
    [
        (models.resnet18_cifar(width=8), torch.randn(3, 32, 32), "4-D batch.*unsqueeze"),
        (models.resnet18_cifar(width=8), torch.randn(1, 1, 32, 32), "3 input channels, got 1"),
        (models.cifar_resnet(20), torch.randn(2, 32, 32, 3), "3 input channels, got 32"),
    ],
)
def test_wrong_input_shapes_raise_clear_errors(model, x, message):
    with pytest.raises(ValueError, match=message):
        model(x)


def test_the_model_checks_its_input_once_and_the_blocks_trust_it(monkeypatch):
    # the boundary is the model's forward; a block alone leaves it to torch's conv, whose
    # message names the channels too
    with pytest.raises(RuntimeError, match="16 channels, but got 8"):
        BasicBlock(16, 16)(torch.randn(1, 8, 8, 8))
    calls = []
    original = checks.check_batch
    monkeypatch.setattr(checks, "check_batch", lambda *a: calls.append(a) or original(*a))
    models.cifar_resnet(8)(torch.randn(1, 3, 32, 32))
    assert len(calls) == 1  # once, at the model's forward
    from resnet_edu import blocks

    assert not hasattr(blocks, "check_batch")  # the blocks have no check of their own


def test_a_batch_of_another_dtype_is_refused_with_both_dtypes():
    model = models.cifar_resnet(8).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"float32 weights and expects torch.float32 images, "
                                        r"got torch.float64: convert the images with "
                                        r"`\.to\(torch.float32\)`"):
        model(x)
    assert model.double()(x).dtype == torch.float64  # a float64 model takes it
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast converts: no refusal
        assert models.cifar_resnet(8).eval()(x.float().bfloat16()).shape == (2, 10)


@pytest.mark.parametrize("model", [models.resnet18_cifar(width=4), models.cifar_resnet(8),
                                   models.resnet18()])
def test_images_as_stored_are_refused_with_the_conversion(model):
    images = load_sample().test.images[:2]  # uint8, as the package stores images
    with pytest.raises(TypeError, match=r"expects floating-point images, got torch.uint8: "
                                        r"convert with `\.float\(\) / 255`"):
        model(images)
    with pytest.raises(TypeError, match=r"got torch.int64: convert with `\.float\(\)`"):
        model(images.long())
    assert model.eval()(normalize(images)).shape == (2, model.num_classes)
