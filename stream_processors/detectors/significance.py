"""How surprising a count is: the upper tail of a Poisson whose rate is itself uncertain.

A count X over a window is modelled as negative binomial with mean `expected` and variance
`expected + dispersion * expected**2` (a Poisson whose rate varies with a coefficient of variation
of sqrt(dispersion); `dispersion` 0 is the plain Poisson). The surprise is -log10 P(X >= observed):
6 means "one chance in a million under the key's normal variation".

The tail is bounded in O(1) (no summation): past the mean the probabilities fall at least
geometrically, so P(X >= x) <= pmf(x) / (1 - ratio), with `ratio` the largest ratio of successive
probabilities from x on. It errs by less than a factor of two where it matters (deep tails), which
is nothing on a log scale, and costs three `lgamma` calls.
"""

from __future__ import annotations

import math

MAX_SURPRISE = 50.0
"""Surprises are capped here (p = 1e-50): beyond it every number means "impossible"."""
SCORE_SCALE = 10.0
"""The anomaly score is surprise / SCORE_SCALE, capped at 1: 0.5 is p = 1e-5, 1.0 is p <= 1e-10."""
GRID_FROM = 2.0
"""Below this counting surprise (p = 0.01) the rate's spread is not searched: the counting noise
alone already says "nothing to see", and the score (at most 0.2) is left as that upper bound."""
_LN10 = math.log(10.0)
_lgamma = math.lgamma
_log = math.log
_log1p = math.log1p


def surprise(observed: float, expected: float, dispersion: float) -> float:
    """-log10 P(X >= observed) for X with mean `expected` and variance expected + dispersion·expected².

    0 when `observed` is not above `expected`.
    """
    value = _tail_surprise(observed, expected, dispersion)
    return MAX_SURPRISE if value > MAX_SURPRISE else value


def _tail_surprise(observed: float, expected: float, dispersion: float) -> float:
    if observed <= expected or observed <= 0:
        return 0.0
    if expected < 1e-9:
        expected = 1e-9
    x = observed
    if dispersion < 1e-6:
        log_pmf = x * _log(expected) - expected - _lgamma(x + 1)
        ratio = expected / (x + 1)
    else:
        r = 1.0 / dispersion
        q = expected / (r + expected)
        log_pmf = (_lgamma(x + r) - _lgamma(r) - _lgamma(x + 1)
                   - r * _log1p(expected / r) + x * _log(q))
        ratio = (x + r) / (x + 1) * q
        if r < 1.0 and q > ratio:
            ratio = q  # successive ratios grow towards q when the shape is below 1
    if ratio >= 1.0:
        return 0.0
    value = -(log_pmf - _log1p(-ratio)) / _LN10
    return value if value > 0.0 else 0.0


def score_of(value: float) -> float:
    """The 0–1 anomaly score of a surprise (linear in -log10 p, capped)."""
    return min(1.0, value / SCORE_SCALE)


def chance_text(value: float) -> str:
    """`about 1 in 3 million`, `less than 1 in 10^12` for a surprise."""
    if value >= MAX_SURPRISE:
        return f"less than 1 in 10^{MAX_SURPRISE:.0f}"
    odds = 10.0 ** value
    if odds >= 1e12:
        return f"about 1 in 10^{value:.0f}"
    if odds >= 1e9:
        return f"about 1 in {odds / 1e9:.0f} billion"
    if odds >= 1e6:
        return f"about 1 in {odds / 1e6:.0f} million"
    if odds >= 1e3:
        return f"about 1 in {odds / 1e3:.0f} thousand"
    return f"about 1 in {odds:.0f}"


def normal_surprise(z: float) -> float:
    """-log10 P(Z >= z) for a standard normal Z (0 for z <= 0, capped at MAX_SURPRISE)."""
    if z <= 0.0:
        return 0.0
    if z < 8.0:
        value = -math.log10(0.5 * math.erfc(z / math.sqrt(2.0)))
    else:  # Mills' ratio: erfc underflows long before the cap
        value = (z * z / 2.0 + math.log(z * math.sqrt(2.0 * math.pi))) / _LN10
    return MAX_SURPRISE if value > MAX_SURPRISE else value


def rate_surprise(observed: float, expected: float, burst_index: float, log_spread: float) -> float:
    """-log10 of the chance of a window holding `observed` requests when `expected` are usual.

    The count is Poisson (widened by bursts: `burst_index` 1 is plain Poisson) around a rate that
    itself runs log-normally around its expectation with sd `log_spread` (a busy hour, a busy
    day, a baseline a little off): a quiet key's few requests are judged mostly by counting
    noise, a busy key's by how far its rate strays. The log-normal tail is heavier than a
    negative binomial's: a busy key whose hours vary by 25 % needs about 4x to reach 1e-8.

    The chance is bounded below by the best of P(rate >= e^(s z) expected) * P(count >= observed
    at that rate) over z (a grid of half steps): within a small factor of the integral, which is
    nothing on a log scale, and a few `lgamma` calls.
    """
    if observed <= expected or observed <= 0:
        return 0.0
    x = observed / burst_index
    mean = expected / burst_index
    best = _tail_surprise(x, mean, 0.0)
    if best > GRID_FROM and log_spread > 0.0:
        z = 0.0
        while z < 12.0:  # the sum is convex in z: stop once it rises
            z += 0.5
            value = normal_surprise(z) + _tail_surprise(x, mean * math.exp(log_spread * z), 0.0)
            if value >= best:
                break
            best = value
    return MAX_SURPRISE if best > MAX_SURPRISE else best


def active_surprise(active: int, minutes: int, rate: float, burst: float, log_spread: float) -> float:
    """-log10 of the chance that `active` of `minutes` minutes see a request, at `rate` requests a
    minute arriving in bursts of `burst` on average, the rate log-normal with sd `log_spread`.

    A minute is active with probability 1 - exp(-rate / burst); the count of active minutes is
    taken as Poisson with that mean (its upper tail is heavier than the binomial's: cautious).
    """
    if active <= 0 or minutes <= 0:
        return 0.0
    bursts = max(rate, 1e-9) / max(burst, 1.0)
    best = _tail_surprise(active, minutes * -math.expm1(-bursts), 0.0)
    if best > GRID_FROM and log_spread > 0.0:
        z = 0.0
        while z < 12.0:
            z += 0.5
            value = normal_surprise(z) + _tail_surprise(active, minutes * -math.expm1(-bursts * math.exp(log_spread * z)), 0.0)
            if value >= best:
                break
            best = value
    return MAX_SURPRISE if best > MAX_SURPRISE else best
