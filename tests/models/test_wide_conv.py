"""ConvBlock's 3x3 convolution: wide layers on small CPU maps run as unfold + matmul, equal to F.conv2d."""

from unittest import mock

import pytest
import torch
import torch.fx
import torch.nn.functional as F

from vipann.models.blocks import Conv2d, ConvBlock, conv3x3


def _no_conv(*args, **kwargs):
    raise AssertionError("F.conv2d was called")


@pytest.mark.parametrize("shape", [(2, 1024, 15, 2), (1, 2048, 7, 2), (4, 1024, 8, 8)])
def test_matmul_path_equals_the_convolution(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    weight = 0.02 * torch.randn(96, shape[1], 3, 3, generator=g)
    reference = F.conv2d(x, weight, None, 1, 1)
    with mock.patch("torch.nn.functional.conv2d", _no_conv):
        out = conv3x3(x, weight)  # the matmul path: F.conv2d is never called
    assert out.shape == reference.shape and out.is_contiguous()
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "shape, why",
    [
        ((2, 512, 15, 2), "narrow layer"),
        ((16, 1024, 15, 2), "too many positions"),
        ((2, 1024, 7, 1), "a 1-wide map"),
    ],
)
def test_other_layers_use_the_convolution(shape, why):
    x = torch.randn(shape)
    weight = torch.randn(8, shape[1], 3, 3)
    with mock.patch("torch.nn.functional.conv2d", _no_conv), pytest.raises(AssertionError, match=r"conv2d was called"):
        conv3x3(x, weight)


def test_autocast_and_channels_last_weights_use_the_convolution():
    x = torch.randn(1, 1024, 4, 4)
    weight = torch.randn(8, 1024, 3, 3)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    with mock.patch("torch.nn.functional.conv2d", _no_conv), pytest.raises(AssertionError), autocast:
        conv3x3(x, weight)
    with mock.patch("torch.nn.functional.conv2d", _no_conv), pytest.raises(AssertionError):
        conv3x3(x, weight.contiguous(memory_format=torch.channels_last))


def test_gradients_equal_the_convolution():
    x = torch.randn(2, 1024, 6, 3, requires_grad=True)
    weight = (0.02 * torch.randn(16, 1024, 3, 3)).requires_grad_()
    gx, gw = torch.autograd.grad(conv3x3(x, weight).square().sum(), (x, weight))
    rx, rw = torch.autograd.grad(F.conv2d(x, weight, None, 1, 1).square().sum(), (x, weight))
    torch.testing.assert_close(gx, rx, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gw, rw, atol=1e-4, rtol=1e-4)


def test_the_layer_is_a_conv2d_with_hooks_keys_and_fx_tracing():
    layer = Conv2d(1024, 32)
    assert isinstance(layer, torch.nn.Conv2d) and type(layer).__name__ == "Conv2d"
    assert set(layer.state_dict()) == {"weight"} and layer.bias is None
    seen = []
    layer.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    x = torch.randn(2, 1024, 5, 2)
    out = layer(x)
    assert seen == [out.shape]
    block = ConvBlock(1024, 32, (1, 1)).eval()
    traced = torch.fx.symbolic_trace(block)  # conv3x3 is an FX leaf: shape tests never see a Proxy
    torch.testing.assert_close(traced(x), block(x))


@pytest.mark.parametrize("shape", [(2, 1024, 5, 2), (2, 8, 5, 2)])  # the matmul path and the convolution
def test_a_bias_given_later_is_applied(shape):
    layer = Conv2d(shape[1], 4)
    layer.bias = torch.nn.Parameter(torch.arange(4.0))  # e.g. batch norm folded into the layer
    x = torch.randn(shape)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, 1, 1), atol=1e-5, rtol=1e-5)
