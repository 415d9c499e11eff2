"""Student-t quantiles for confidence intervals (private; scalar maths, no SciPy dependency)."""

from __future__ import annotations

import math


def student_t_cdf(t: float, df: int) -> float:
    """CDF of Student's t with integer ``df`` (closed form, Abramowitz & Stegun 26.7.3-26.7.4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    term, total = 1.0, 1.0
    if df % 2 == 1:
        # A = (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)), up to cos^(df-3).
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        two_sided = 2.0 / math.pi * (theta + (s * math.cos(theta) * total if df > 1 else 0.0))
    else:
        # A = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...), up to cos^(df-2).
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        two_sided = s * total
    two_sided = min(two_sided, 1.0)
    return 0.5 + 0.5 * two_sided if t >= 0 else 0.5 - 0.5 * two_sided


def _normal_quantile(p: float) -> float:
    # Inverse of Phi by bisection on erfc (plenty fast for a scalar).
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def student_t_quantile(p: float, df: int) -> float:
    """Quantile ``t_{p, df}`` of Student's t for integer ``df >= 1`` and ``0 < p < 1``.

    Exact to about 1e-12 via bisection on the closed-form CDF; for ``df > 1000`` a Cornish-Fisher
    expansion around the normal quantile (error below 1e-9) avoids the long finite sums.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1); got {p}")
    if df < 1:
        raise ValueError(f"df must be a positive integer; got {df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    if df > 1000:
        z = _normal_quantile(p)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / df + g2 / df**2 + g3 / df**3
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)
