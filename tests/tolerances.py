"""How far two float32 computations of the same BERT may differ, stated once for every parity test.

Two correct implementations sum the same terms in different orders (AVX2 against AVX-512 kernels,
fused against explicit attention, our layers against transformers'), so they round differently.
With round-to-nearest, the error of a sum of n terms of size up to M stays below
lambda * sqrt(n) * u * M, u = 2**-24 the unit roundoff, except with probability
2 exp(-lambda**2 / 2) (Higham and Mary, "A new approach to probabilistic rounding error analysis",
SIAM J. Sci. Comput. 2019); the worst case n * u * M is never approached. lambda = 7 makes that
1e-10 per element, so even the largest of the ~10**8 elements a parity test compares stays
within. The bounds apply this to the default model (all-MiniLM-L6-v2: hidden size 384, heads of
32), so they are the same on every CPU.

Measured worst differences against transformers (tests/test_model.py::test_parity_on_sst2, 1,000
sentences, ATEN_CPU_CAPABILITY=avx2 and avx512 alike): hidden states 1.0e-5 (fixture sentences)
and attention probabilities 4.8e-5 (the last 1,000 of the full SST-2 train set).
"""

from __future__ import annotations

import math

LAMBDA = 7.0
UNIT_ROUNDOFF = 2.0 ** -24  # half float32's machine epsilon
F32_EPS = 2 * UNIT_ROUNDOFF


def rounding_bound(magnitude: float, length: int) -> float:
    """How far two float32 sums of `length` terms of size up to `magnitude` may lie apart."""
    return LAMBDA * math.sqrt(length) * UNIT_ROUNDOFF * magnitude


# Outputs of unit size (pooler, logits of small random heads, losses): the guide's 1e-5, which
# covers rounding_bound(1, 384) = 8.2e-6.
UNIT = 1e-5

# Hidden states: the guide's 1e-5, doubled, because float32 rounding alone reaches it on real data:
# against transformers, the worst difference over all seven hidden states of 1,000 SST-2 sentences is
# 8.7e-6 (the fixture's) and 1.04e-5 (the last 1,000 of the full train set), on values of unit size.
# (rounding_bound(11, 384) = 9.0e-5, for MiniLM's outlier feature of 10.5, would be safe too, but it
# would let LayerNorm's eps at 1e-7 instead of 1e-12 pass: that moves hidden states by 8.0e-5.)
HIDDEN_STATES = 2e-5

# Attention probabilities: a softmax of scores that reach 46 in size, each the end of a sum over
# the hidden size (the query and key projections, 384 terms) and then over a head (32 terms). A
# score error d moves a probability p by at most 2 p (1 - p) d <= d / 2:
# rounding_bound(46, 416) / 2 = 2.0e-4.
ATTENTION = rounding_bound(magnitude=46, length=384 + 32) / 2
