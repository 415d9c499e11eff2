"""The dynamic layers of EfficientAT's DyMN: dynamic convolution, dynamic ReLU, coordinate attention.

A dynamic block (:class:`DynamicBlock`) first summarises its input into a *context*
(:class:`ContextGen`): a vector ``h`` per clip that parameterises the block's dynamic convolutions
(:class:`DynamicConv`: a softmax-weighted mixture of ``K = 4`` kernels, Eq. 6 of the paper) and its
dynamic ReLU (:class:`DyReLUB`: per-channel maxima of ``M = 2`` input-dependent linear maps), plus
a frequency and a time sequence for coordinate attention (:class:`CoordAtt`).

In ``flip`` models every weight of a dynamic block is Bayesian: the context generator's
convolutions and the linear layers that produce the kernel attention and the ReLU coefficients are
Flipout layers, and each dynamic convolution becomes :class:`DynamicConvFlipout`, a Gaussian
posterior over the bank of ``K`` kernels sampled with Flipout (each clip convolves with its own
attention-weighted mixture of the mean kernels plus the same mixture of the perturbation). The
softmax temperature (1 for AudioSet-trained weights) and Dy-ReLU's constant buffers stay fixed.

Names follow EfficientAT's ``models/dymn/dy_block.py`` so released state dicts load key for key.

References:
    F. Schmid, K. Koutini, G. Widmer, "Dynamic Convolutional Neural Networks as Efficient
    Pre-trained Audio Models", IEEE/ACM TASLP 32, 2024.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vipann.layers import FlipoutLayer
from vipann.models.efficientat.blocks import BlockConfig, batch_norm, make_divisible

__all__ = ["ContextGen", "CoordAtt", "DyReLUB", "DynamicBlock", "DynamicConv", "DynamicConvFlipout", "context_size"]

Context = tuple[Tensor, Tensor, Tensor]


def context_size(expanded: int, width_mult: float, ratio: int = 4, low: int = 32, high: int = 128) -> int:
    """Width ``H`` of a block's context: ``expanded / 4`` rounded to 8, clipped to ``[32 w, 128 w]`` (rounded)."""
    return int(
        min(
            max(make_divisible(expanded // ratio, 8), make_divisible(low * width_mult, 8)),
            make_divisible(high * width_mult, 8),
        )
    )


def _per_clip_conv(conv: DynamicConv | DynamicConvFlipout, x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve clip ``b`` of ``x`` with its own flattened kernel ``kernels[b]`` (one grouped convolution)."""
    b, c, f, t = x.shape
    k = conv.kernel_size
    weight = kernels.reshape(b * conv.out_channels, conv.in_channels // conv.groups, k, k)
    out = F.conv2d(
        x.reshape(1, b * c, f, t),
        weight,
        None,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups * b,
    )
    return out.reshape(b, conv.out_channels, out.shape[-2], out.shape[-1])


class _DynamicGeometry:
    """Geometry and attention shared by the deterministic and the Flipout dynamic convolution."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    padding: int
    dilation: int
    groups: int
    num_kernels: int
    temperature: float
    residuals: nn.Sequential

    def _set_geometry(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int, groups: int, k: int
    ) -> None:
        if in_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.dilation = int(kernel_size), int(stride), int(dilation)
        self.padding = (self.kernel_size - 1) // 2 * self.dilation
        self.groups, self.num_kernels = int(groups), int(k)

    @property
    def kernel_numel(self) -> int:
        """Elements of one kernel: ``out * in / groups * k * k``."""
        return self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2

    def attention(self, context: Context) -> Tensor:
        """Softmax attention ``(B, K)`` over the kernels, from the context vector ``h``."""
        h = context[0].reshape(context[0].shape[0], -1)
        return torch.softmax(self.residuals(h) / self.temperature, dim=-1)


class DynamicConv(_DynamicGeometry, nn.Module):
    """Dynamic convolution: each clip convolves with ``sum_k softmax(W_a h / T)_k  W_k``.

    The ``K`` kernels are stored flattened as one parameter ``weight`` of shape
    ``(1, 1, K, out * in / groups * k * k)`` (EfficientAT's layout); the attention comes from
    ``residuals.0``, a linear layer on the context vector. No bias (EfficientAT never uses one).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        context_dim: Width of the context vector.
        kernel_size: Square kernel size (padding keeps the size).
        stride: Stride.
        dilation: Dilation.
        groups: Groups (``in_channels`` for a depthwise convolution).
        k: Number of kernels.
        temperature: Softmax temperature (1 for AudioSet-trained DyMNs).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        context_dim: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        k: int = 4,
        temperature: float = 1.0,
    ) -> None:
        nn.Module.__init__(self)
        self._set_geometry(in_channels, out_channels, kernel_size, stride, dilation, groups, k)
        self.temperature = float(temperature)
        self.residuals = nn.Sequential(nn.Linear(context_dim, k))
        weight = torch.empty(k, self.kernel_numel)
        fan_out = out_channels * kernel_size**2  # kaiming_normal_(mode="fan_out") of each kernel
        nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))
        self.weight = nn.Parameter(weight.reshape(1, 1, k, -1))

    def extra_repr(self) -> str:
        """Summary shown by ``repr(module)``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, k={self.num_kernels}, temperature={self.temperature:g}"
        )

    def forward(self, x: Tensor, context: Context) -> Tensor:
        """``(B, in, F, T)`` -> ``(B, out, F', T')`` with per-clip kernels."""
        kernels = self.attention(context) @ self.weight.reshape(self.num_kernels, -1)
        return _per_clip_conv(self, x, kernels)

    def to_flipout(self, **prior: float) -> DynamicConvFlipout:
        """The Flipout counterpart with the same geometry and the same ``residuals`` module."""
        layer = DynamicConvFlipout(
            self.in_channels,
            self.out_channels,
            self.residuals,
            self.kernel_size,
            self.stride,
            self.dilation,
            self.groups,
            self.num_kernels,
            self.temperature,
            **prior,
        )
        return layer.to(self.weight.device)


class DynamicConvFlipout(_DynamicGeometry, FlipoutLayer):
    """:class:`DynamicConv` with a mean-field Gaussian posterior over its kernel bank, sampled with Flipout.

    ``mu_weight``/``rho_weight`` have the shape of :class:`DynamicConv`'s ``weight``. With
    attention ``a_b`` of clip ``b``, the output is
    ``conv(x_b, a_b · mu) + s_out * conv(x_b * s_in, a_b · (sigma * eps))``: each draw of ``eps``
    (one per Monte-Carlo group, see :class:`~vipann.layers.StochasticModule`) perturbs the whole
    bank, and each clip sees it through its own attention and Rademacher signs.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        residuals: The attention network (``Sequential(Linear)`` or its Flipout form), shared.
        kernel_size: Square kernel size.
        stride: Stride.
        dilation: Dilation.
        groups: Groups.
        k: Number of kernels.
        temperature: Softmax temperature.
        prior_mean: Prior mean.
        prior_sigma: Prior standard deviation.
        posterior_mu_init: Initial mean of ``mu``.
        posterior_rho_init: Initial mean of ``rho``.
    """

    _weight_name = "weight"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        residuals: nn.Sequential,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        k: int = 4,
        temperature: float = 1.0,
        prior_mean: float = 0.0,
        prior_sigma: float = 1.0,
        posterior_mu_init: float = 0.0,
        posterior_rho_init: float = -3.0,
    ) -> None:
        self._set_geometry(in_channels, out_channels, kernel_size, stride, dilation, groups, k)
        shape = (1, 1, self.num_kernels, self.kernel_numel)
        FlipoutLayer.__init__(
            self, shape, out_channels, False, prior_mean, prior_sigma, posterior_mu_init, posterior_rho_init
        )
        self.temperature = float(temperature)
        self.residuals = residuals

    extra_repr = DynamicConv.extra_repr

    def forward(self, x: Tensor, context: Context) -> Tensor:  # type: ignore[override]
        """Posterior-mean output, plus the Flipout perturbation when sampling."""
        k = self.num_kernels
        attention = self.attention(context)
        mean = _per_clip_conv(self, x, attention @ self.mu_w.reshape(k, -1))
        if self.mean_only or not self.stochastic:
            return mean
        b = x.shape[0]
        groups = self._group_count(b)
        gen = self.generator
        sign_in = torch.empty_like(x).uniform_(-1.0, 1.0, generator=gen).sign()
        sign_out = torch.empty_like(mean).uniform_(-1.0, 1.0, generator=gen).sign()
        sigma = F.softplus(self.rho_w).reshape(k, -1)
        rows = b // groups
        per_chunk = max(1, self.max_draw_elements // self.mu_w.numel())
        parts = []
        for start in range(0, groups, per_chunk):
            count = min(per_chunk, groups - start)
            eps = torch.empty((count, k, sigma.shape[1]), dtype=sigma.dtype, device=sigma.device).normal_(generator=gen)
            att = attention[start * rows : (start + count) * rows].reshape(count, rows, k)
            parts.append(torch.bmm(att, sigma * eps).reshape(count * rows, -1))
        delta = parts[0] if len(parts) == 1 else torch.cat(parts)
        return mean + _per_clip_conv(self, x * sign_in, delta) * sign_out


class DyReLUB(nn.Module):
    """Dynamic ReLU, variant B: ``max_m (a_m(h) x + b_m(h))`` per channel, ``M`` maps.

    ``coef_net.0`` maps the context to ``2 M C`` values ``theta = 2 sigmoid(.) - 1`` in
    ``(-1, 1)``; the coefficients are ``theta * lambdas + init_v`` with the constant buffers
    ``lambdas = (1, ..., 1, 0.5, ..., 0.5)`` and ``init_v = (1, 0, ..., 0)``: slopes ``a_m`` first,
    then intercepts ``b_m`` (with ``theta = 0`` the unit is a ReLU, ``max(x, 0)``).

    Args:
        channels: Channels ``C``.
        context_dim: Width of the context vector.
        m: Number of linear maps ``M``.

    References:
        Y. Chen et al., "Dynamic ReLU", ECCV 2020.
    """

    lambdas: Tensor
    init_v: Tensor

    def __init__(self, channels: int, context_dim: int, m: int = 2) -> None:
        super().__init__()
        self.channels, self.m = int(channels), int(m)
        self.coef_net = nn.Sequential(nn.Linear(context_dim, 2 * m * channels))
        self.register_buffer("lambdas", torch.tensor([1.0] * m + [0.5] * m))
        self.register_buffer("init_v", torch.tensor([1.0] + [0.0] * (2 * m - 1)))

    def forward(self, x: Tensor, context: Context) -> Tensor:
        """``(B, C, F, T)`` -> same shape."""
        b = x.shape[0]
        theta = 2.0 * torch.sigmoid(self.coef_net(context[0].reshape(b, -1))) - 1.0
        coefs = theta.reshape(b, self.channels, 1, 1, 2 * self.m) * self.lambdas + self.init_v
        out = x * coefs[..., 0] + coefs[..., self.m]
        for i in range(1, self.m):
            out = torch.maximum(out, x * coefs[..., i] + coefs[..., self.m + i])
        return out


class CoordAtt(nn.Module):
    """Coordinate attention: ``x * sigmoid(g_f) * sigmoid(g_t)`` with the context's frequency and time sequences."""

    def forward(self, x: Tensor, context: Context) -> Tensor:
        """``(B, C, F, T)`` -> same shape."""
        return x * context[1].sigmoid() * context[2].sigmoid()


class ContextGen(nn.Module):
    """A block's context: the vector ``h`` and the frequency/time sequences of coordinate attention.

    The input is averaged over time (a frequency sequence) and over frequency (a time sequence);
    both go through one shared 1x1 convolution, BatchNorm and Hardswish; ``h`` is their mean over
    positions; ``conv_f``/``conv_t`` map the (strided, average-pooled) sequences to the expanded width.

    Args:
        context_dim: Width ``H``.
        in_channels: Channels of the block's input.
        expanded: Expanded channels of the block.
        stride: The block's depthwise stride (the sequences are pooled to its output size).
    """

    def __init__(self, context_dim: int, in_channels: int, expanded: int, stride: int = 1) -> None:
        super().__init__()
        self.joint_conv = nn.Conv2d(in_channels, context_dim, 1, bias=False)
        self.joint_norm = batch_norm(context_dim)
        self.joint_act = nn.Hardswish(inplace=True)
        self.conv_f = nn.Conv2d(context_dim, expanded, 1)
        self.conv_t = nn.Conv2d(context_dim, expanded, 1)
        if stride > 1:
            self.pool_f: nn.Module = nn.AvgPool2d((3, 1), (stride, 1), (1, 0))
            self.pool_t: nn.Module = nn.AvgPool2d((1, 3), (1, stride), (0, 1))
        else:
            self.pool_f = nn.Identity()
            self.pool_t = nn.Identity()

    def forward(self, x: Tensor) -> Context:
        """``(B, C, F, T)`` -> ``(h (B, H, 1, 1), g_f (B, E, F', 1), g_t (B, E, 1, T'))``."""
        f, t = x.shape[2], x.shape[3]
        seq = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
        seq = self.joint_act(self.joint_norm(self.joint_conv(seq)))  # (B, H, F + T, 1)
        h_f, h_t = torch.split(seq, [f, t], dim=2)
        h = seq.mean(dim=2, keepdim=True)
        return h, self.conv_f(self.pool_f(h_f)), self.conv_t(self.pool_t(h_t.transpose(2, 3)))


class DynamicBlock(nn.Module):
    """DyMN's block: dynamic expand, depthwise and project convolutions, Dy-ReLU and coordinate attention.

    context -> dynamic expand -> BN -> act -> dynamic depthwise -> BN -> Dy-ReLU -> coordinate
    attention -> dynamic project -> BN [+ input].

    Args:
        cfg: The width-scaled block configuration (``use_se`` is ignored: DyMN has no SE).
        width_mult: The width multiplier (it bounds the context width).
        temperature: Softmax temperature of the dynamic convolutions.
        k: Kernels per dynamic convolution.
        m: Linear maps of the dynamic ReLU.
    """

    def __init__(self, cfg: BlockConfig, width_mult: float, temperature: float = 1.0, k: int = 4, m: int = 2) -> None:
        super().__init__()
        if cfg.stride not in (1, 2):
            raise ValueError(f"illegal stride {cfg.stride}; EfficientAT blocks use 1 or 2")
        self.context_dim = context_size(cfg.expanded, width_mult)
        h = self.context_dim
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        if cfg.expanded != cfg.in_channels:
            self.exp_conv: nn.Module = DynamicConv(cfg.in_channels, cfg.expanded, h, 1, k=k, temperature=temperature)
            self.exp_norm: nn.Module = batch_norm(cfg.expanded)
            self.exp_act: nn.Module = act(inplace=True)
        else:
            self.exp_conv = self.exp_norm = self.exp_act = None  # type: ignore[assignment]
        self.depth_conv = DynamicConv(
            cfg.expanded, cfg.expanded, h, cfg.kernel, cfg.stride, groups=cfg.expanded, k=k, temperature=temperature
        )
        self.depth_norm = batch_norm(cfg.expanded)
        self.depth_act = DyReLUB(cfg.expanded, h, m)
        self.ca = CoordAtt()
        self.proj_conv = DynamicConv(cfg.expanded, cfg.out_channels, h, 1, k=k, temperature=temperature)
        self.proj_norm = batch_norm(cfg.out_channels)
        self.context_gen = ContextGen(h, cfg.in_channels, cfg.expanded, cfg.stride)
        self.use_res_connect = cfg.residual
        self.out_channels = cfg.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in, F, T)`` -> ``(B, out, F', T')``."""
        context = self.context_gen(x)
        out = x
        if self.exp_conv is not None:
            out = self.exp_act(self.exp_norm(self.exp_conv(out, context)))
        out = self.depth_act(self.depth_norm(self.depth_conv(out, context)), context)
        out = self.ca(out, context)
        out = self.proj_norm(self.proj_conv(out, context))
        return out + x if self.use_res_connect else out
