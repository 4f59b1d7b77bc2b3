"""Upper bounds on the L2 operator norm of linear layers by Gram iteration (Delattre et al. 2023,
arXiv:2305.16173): rigorous ones with float64 rounding accounted for (certificates) and
differentiable ones (training). Convolutions go through the DFT of the kernel on the padded grid
(Sedghi et al. 2019, arXiv:1805.10408) or through their patch matrix, whichever is smaller.

Gram iteration: ``||A||_2 <= ||G_k||_F ** (1 / 2**k)`` for ``G_0 = A``, ``G_{k+1} = G_k^H G_k``;
the gap shrinks to ``rank ** (1 / 2**(k+1))`` even when the top singular values are equal (an
orthogonal matrix), where power iteration gives no certified gap at all.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

U = 2.0**-53  # unit roundoff of float64
TINY = 2.0**-1074  # the smallest subnormal: absolute slack for underflow
MAX_ITER = 32


def _gamma(n: int) -> float:
    """A bound on the relative error of a float64 real or complex dot product of length n
    (Higham's gamma_{n+2} with room for complex products)."""
    k = (2 * n + 8) * U
    return k / (1 - k)


def _up(v: Tensor, k: float = 8.0) -> Tensor:
    """``v`` (non-negative, float64) nudged upward past ``k`` roundings."""
    return torch.nextafter(v * (1 + k * U), v.new_tensor(math.inf))


def _frob2_up(x: Tensor) -> Tensor:
    """Upper bounds on ``||x||_F**2`` per matrix of a batch (B, m, n), float64."""
    sq = x.real**2 + x.imag**2 if x.is_complex() else x**2
    n = x.shape[-1] * x.shape[-2]
    return _up(sq.sum((-2, -1)), 4.0 * (n + 4)) + n * 4 * TINY


def _pow2_exponent(v: Tensor) -> Tensor:
    """Integer exponents e with ``2**e`` near ``v`` (v > 0), as float64."""
    return torch.floor(torch.log2(v.clamp_min(1e-300)))


def _pow2(e: Tensor) -> Tensor:
    """``2**e`` for integer-valued ``e`` (float64), exactly (math.ldexp)."""
    return torch.tensor([math.ldexp(1.0, int(v)) for v in e.tolist()], dtype=torch.float64)


def _scale(x: Tensor, e: Tensor) -> Tensor:
    """``x * 2**-e`` per matrix: exact unless entries underflow (covered by TINY slack)."""
    return x * _pow2(-e).view(-1, 1, 1)


def gram_upper(a: Tensor, max_iter: int = MAX_ITER, rtol: float = 1e-13) -> Tensor:
    """Rigorous upper bounds on ``||a_b||_2`` for a batch of matrices ``a`` (B, m, n), real or
    complex, computed in float64 by Gram iteration with every rounding bounded:
    ``||X||_2**2 <= ||fl(X^H X)||_2 + gamma_m ||X||_F**2`` at each level, ``||X_K||_2 <=
    ||X_K||_F`` at the last, every product rescaled by a power of two (exact)."""
    x = a.detach()
    x = x.to(torch.complex128) if x.is_complex() else x.to(torch.float64)
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.shape[-2] < x.shape[-1]:
        x = x.mH  # the smaller Gram matrix
    big, small = x.shape[-2], x.shape[-1]
    if x.numel() == 0:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    top = x.abs().amax((-2, -1))
    zero = top == 0
    e0 = torch.where(zero, 0.0, _pow2_exponent(top))  # entries below 2 after scaling
    x = _scale(x, e0)
    levels: list[tuple[Tensor, Tensor, float]] = []  # (exponent s_k, F_k^2 bound, slack)
    best = None
    for k in range(max_iter):
        f2 = _frob2_up(x)
        inner = big if k == 0 else small
        p = x.mH @ x
        s = torch.where(f2 > 0, _pow2_exponent(f2), 0.0)
        x = _scale(p, s)
        slack = _gamma(inner) * 1.0  # times F_k^2, below
        absolute = small * small * (inner + 2) * 4 * TINY
        levels.append((s, f2 * slack + absolute, small * 4 * TINY))
        bound = _unwind(levels, _frob2_up(x).sqrt())
        done = best is not None and bool(((best - bound) <= rtol * bound).all())
        best = bound if best is None else torch.minimum(best, bound)
        if done:
            break
    out = _up(best * _pow2(e0), 4.0)
    return torch.where(zero, torch.zeros_like(out), out)


def _unwind(levels, last: Tensor) -> Tensor:
    """Walk the levels back from ``||X_K||_2 <= last``: ``||X_k||_2 <= sqrt(2**s_k (||X_{k+1}||_2
    + d TINY) + gamma F_k^2 + slack)``, rounded upward at every step."""
    u = _up(last)
    for s, err, under in reversed(levels):
        u = _up(torch.sqrt(_up(_up(_up(u + under) * _pow2(s)) + err)))
    return u


def matrix_norm_upper(weight: Tensor) -> float:
    """A rigorous upper bound on the spectral norm of a weight matrix (any dtype, float64 math)."""
    w = weight.detach().reshape(weight.shape[0], -1)
    return float(gram_upper(w)[0])


def gram_bound(a: Tensor, iters: int = 6) -> Tensor:
    """Differentiable Gram-iteration upper bound on ``||a_b||_2`` per matrix (B, m, n) (an upper
    bound in exact arithmetic; for training, not for certificates)."""
    x = a if a.dim() == 3 else a.unsqueeze(0)
    if x.shape[-2] < x.shape[-1]:
        x = x.mH
    log_c = torch.zeros(x.shape[0], dtype=x.real.dtype, device=x.device)
    for _ in range(iters):
        f = torch.linalg.matrix_norm(x).clamp_min(1e-30)
        x = x / f.view(-1, 1, 1)
        log_c = 2 * (log_c + torch.log(f))
        x = x.mH @ x
    log_f = torch.log(torch.linalg.matrix_norm(x).clamp_min(1e-30))
    return torch.exp((log_c + log_f) / 2**iters)


# --- convolutions --------------------------------------------------------------------------------


def full_kernel(weight: Tensor, groups: int, dilation: tuple[int, ...]) -> Tensor:
    """A grouped, dilated kernel (out, in/groups, *k) as a dense one (out, in, *k'): zeros
    between dilated taps and outside each group's block."""
    w = weight
    if groups > 1:
        out, per_in = w.shape[0], w.shape[1]
        full = w.new_zeros(out, per_in * groups, *w.shape[2:])
        per_out = out // groups
        for g in range(groups):
            full[g * per_out : (g + 1) * per_out, g * per_in : (g + 1) * per_in] = w[
                g * per_out : (g + 1) * per_out
            ]
        w = full
    if any(d != 1 for d in dilation):
        size = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation, strict=True)]
        dil = w.new_zeros(*w.shape[:2], *size)
        dil[(slice(None), slice(None), *(slice(None, None, d) for d in dilation))] = w
        w = dil
    return w


def _twiddles(n: int, k: int) -> Tensor:
    """``exp(-2 pi i a f / n)`` for f < n, a < k (complex128; angles reduced exactly mod n)."""
    f = torch.arange(n, dtype=torch.int64)[:, None]
    a = torch.arange(k, dtype=torch.int64)[None, :]
    angle = (f * a % n).to(torch.float64) * (-2 * math.pi / n)
    return torch.polar(torch.ones_like(angle), angle)


def conv_spectrum_upper(kernel: Tensor, grid: tuple[int, int]) -> float:
    """A rigorous bound on the spectral norm of the circular convolution with ``kernel`` (out,
    in, kh, kw) on an ``grid`` (n1, n2): the largest singular value over the DFT frequencies,
    each frequency's matrix computed by direct summation in float64 with its error bounded by
    ``8 (kh kw + 40) u sum|w|`` per entry (twiddles within 16 u), added as a Frobenius norm."""
    w = kernel.detach().to(torch.float64)
    kh, kw = w.shape[2], w.shape[3]
    e1, e2 = _twiddles(grid[0], kh), _twiddles(grid[1], kw)
    spec = torch.einsum("fa,oiab,gb->fgoi", e1, w.to(torch.complex128), e2)
    err = 8 * (kh * kw + 40) * U * w.abs().sum((2, 3))
    err_f = float(_up(torch.sqrt(_up((err**2).sum()))))
    norms = gram_upper(spec.reshape(-1, *spec.shape[2:]))
    return float(_up(norms.max() + err_f))


def conv_spectrum(kernel: Tensor, grid: tuple[int, int]) -> Tensor:
    """The kernel's DFT on ``grid`` as a batch of (out, in) matrices, one per frequency
    (differentiable, torch.fft: for training)."""
    spec = torch.fft.fft2(kernel, s=grid)  # (out, in, n1, n2)
    return spec.permute(2, 3, 0, 1).reshape(-1, kernel.shape[0], kernel.shape[1])


def conv_grid(in_hw: tuple[int, int], kernel_hw: tuple[int, int], pads) -> tuple[int, int]:
    """The circular grid that contains the zero-padded input: ``(H + top + bottom, W + left +
    right)``, at least the kernel; ``pads`` as (left, right, top, bottom)."""
    left, right, top, bottom = pads
    return (
        max(in_hw[0] + top + bottom, kernel_hw[0]),
        max(in_hw[1] + left + right, kernel_hw[1]),
    )


def windows_per_input(kernel: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """How many windows of a sliding operation can contain one input (per dim ceil(k / s))."""
    return math.prod(math.ceil(k / s) for k, s in zip(kernel, stride, strict=True))


def conv_norm_upper(
    weight: Tensor,
    in_hw: tuple[int, int],
    *,
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> float:
    """A rigorous bound on the L2 norm of a zero-padded 2-d convolution (bias aside): the smaller
    of the circular convolution's norm on the padded grid (the zero-padded one is a restriction
    of it; striding only drops outputs) and ``sqrt(c) ||K||`` for the patch matrix K (out, in *
    kh * kw) with c windows per input (exact when windows do not overlap)."""
    w = full_kernel(weight.detach().to(torch.float64), groups, dilation)
    k_hw = (w.shape[2], w.shape[3])
    patch = math.sqrt(windows_per_input(k_hw, stride)) * matrix_norm_upper(
        w.reshape(w.shape[0], -1)
    )
    spectral = conv_spectrum_upper(w, conv_grid(in_hw, k_hw, pads))
    return float(_up(torch.tensor(min(patch, spectral), dtype=torch.float64)))
