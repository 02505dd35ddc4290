"""bayesglmm._normal (the host's Φ and Φ⁻¹) against scipy.special."""

import numpy as np
from scipy import special

from bayesglmm._normal import ndtr, ndtri


def test_cdf_matches_scipy_in_both_tails():
    x = np.r_[np.linspace(-37, 38, 751), -1e-300, 0.0, np.inf, -np.inf]
    np.testing.assert_allclose(ndtr(x), special.ndtr(x), rtol=1e-13, atol=0)
    # below x ≈ −37.5 scipy returns 0; erfc still resolves Φ as a subnormal (Φ(−38) ≈ 2.9e-316)
    deep = ndtr(np.linspace(-38.4, -37.6, 5))
    assert np.all(np.diff(deep) > 0) and 0 < deep[0] < 1e-315
    assert np.isnan(ndtr(np.nan)) and isinstance(ndtr(1.0), float)
    assert ndtr(np.zeros((2, 3))).shape == (2, 3)


def test_quantile_matches_scipy_and_handles_the_edges():
    p = np.r_[np.logspace(-300, -1, 300), np.linspace(0.1, 0.9, 81), 1 - np.logspace(-16, -1, 50)]
    np.testing.assert_allclose(ndtri(p), special.ndtri(p), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(ndtri([0.0, 1.0]), [-np.inf, np.inf])
    assert np.all(np.isnan(ndtri([-0.1, 1.1, np.nan])))
    assert ndtri(0.975) == special.ndtri(0.975) or abs(ndtri(0.975) - 1.959963984540054) < 1e-15
