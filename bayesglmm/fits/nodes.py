"""Node designs for integrating over the variance parameters (fits.integrate).

A design is a set of points z_k (N, m) with weights w_k (N,) for E[h(z)], z ~ N(0, I_m):
E[h(z)] ≈ Σ_k w_k h(z_k).  fits.integrate places them on the standardised vcp posterior
(vcp = m̂ + L z, LLᵀ the vcp block of the mode's covariance) and corrects the weights by
p̃(vcp_k | y) / φ(z_k), so a design that is exact for low-degree polynomials under N(0, I)
gives posterior moments that are exact when p̃ / φ is such a polynomial.

The rule (:func:`node_design`), by the number m of variance parameters:

* m = 1: Gauss–Hermite, 7 points — exact for polynomials of degree ≤ 13;
* m = 2: the product Gauss–Hermite grid, 5 × 5 = 25 points — exact for degree ≤ 9 in each
  coordinate;
* m ≥ 3: the central composite design (CCD) of INLA (Rue, Martino & Chopin 2009, JRSS-B 71,
  §6.5): the centre, the 2m axial points ±f₀√m·e_i and the 2^(m−p) points f₀·s of a
  two-level fractional factorial design s ∈ {−1, 1}^m of resolution V (:func:`two_level`),
  all but the centre on the sphere of radius f₀√m (f₀ = 1.1, INLA's default).  With weight
  1 − 1/f₀² at the centre and 1/((N − 1)f₀²) elsewhere it is exact for E[1], E[z],
  E[z zᵀ], all third moments and the mixed fourth moments E[z_i z_j z_k z_l] (distinct
  indices) — a second-order response surface in z, as INLA's.  N = 1 + 2m + 2^(m−p):
  15 (m = 3), 25 (4), 27 (5), 45 (6), 79 (7), 81 (8), 147 to 151 (9 to 11), 281 (12).

``n_points`` asks for the product Gauss–Hermite grid with that many points per dimension
instead (n_points^m nodes), for any m.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..quadrature import gauss_hermite, product_rule

__all__ = ["CCD_F0", "MAX_DIM", "ccd", "gaussian_misfit", "is_product_grid", "node_design",
           "two_level"]

CCD_F0 = 1.1  # INLA's f₀: the CCD's points lie on the sphere of radius f₀√m
MAX_DIM = 12  # most variance parameters integrated over (the CCD has 281 nodes there)
_GRID_POINTS = {1: 7, 2: 5}  # Gauss–Hermite points per dimension for m ≤ 2


def two_level(m: int) -> np.ndarray:
    """A two-level fractional factorial design of resolution V: (2^k, m) signs ±1.

    The k base columns are the full factorial; each further column is the product of a
    subset of them (a vector of GF(2)^k), chosen greedily among subsets of ≥ 4 base columns
    so that no sum of 4 or fewer columns vanishes (no word of length ≤ 4 in the defining
    relation: main effects and two-factor interactions are not aliased with one another).
    k is the smallest for which m columns can be found (m = 5 → 16 runs, 8 → 64, 12 → 256).
    """
    for k in range(1, m + 1):
        base = [1 << i for i in range(k)]
        cols = list(base[:m])
        cands = sorted((v for v in range(1, 1 << k) if bin(v).count("1") >= 4),
                       key=lambda v: (bin(v).count("1"), v))
        for v in cands:
            if len(cols) == m:
                break
            # a new column v is admissible unless v equals a sum of ≤ 3 chosen columns
            sums = {0}
            for r in (1, 2, 3):
                sums.update(int(np.bitwise_xor.reduce(c)) for c in itertools.combinations(cols, r))
            if v not in sums:
                cols.append(v)
        if len(cols) == m:
            runs = np.arange(1 << k)
            # entry (run, column v): (−1)^{parity of run & v}
            par = np.array([[bin(r & v).count("1") & 1 for v in cols] for r in runs])
            return (1 - 2 * par).astype(float)
    raise AssertionError("unreachable: k = m gives the full factorial")  # pragma: no cover


def ccd(m: int, f0: float = CCD_F0) -> tuple[np.ndarray, np.ndarray]:
    """INLA's central composite design for N(0, I_m): nodes (N, m) and weights (N,) (see
    the module docstring)."""
    r = f0 * np.sqrt(m)
    axial = np.concatenate([r * np.eye(m), -r * np.eye(m)])
    fact = f0 * two_level(m)
    z = np.concatenate([np.zeros((1, m)), axial, fact])
    n_out = z.shape[0] - 1
    w = np.full(z.shape[0], 1.0 / (n_out * f0**2))
    w[0] = 1.0 - 1.0 / f0**2
    return z, w


def is_product_grid(m: int, n_points: int | None = None) -> bool:
    """Whether :func:`node_design` gives a product Gauss–Hermite grid (m ≤ 2, or
    ``n_points`` given) rather than the central composite design."""
    return n_points is not None or m in _GRID_POINTS


def node_design(m: int, n_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (N, m) and weights (N,) for E[h(z)], z ~ N(0, I_m): Gauss–Hermite for m ≤ 2,
    the CCD above, or the product grid of ``n_points`` per dimension (module docstring).

    Examples
    --------
    >>> z, w = node_design(3)
    >>> z.shape, round(float(w.sum()), 12)
    ((15, 3), 1.0)
    """
    if m < 1:
        raise ValueError(f"no variance parameters to integrate over (m={m})")
    if n_points is not None:
        if int(n_points) < 1:
            raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
        return product_rule(gauss_hermite(int(n_points)), m)
    if m in _GRID_POINTS:
        return product_rule(gauss_hermite(_GRID_POINTS[m]), m)
    if m > MAX_DIM:
        raise ValueError(f"{m} variance parameters: integrating over more than {MAX_DIM} is "
                         "not supported")
    return ccd(m)


def gaussian_misfit(z: np.ndarray, logp: np.ndarray) -> float:
    """How far log p̃(vcp | y) is from the mode's Gaussian at the nodes of a design centred on
    the mode (row 0 of ``z``): max_k |log p̃_k − log p̃_0 + ½|z_k|²| over the finite values (0
    for a Gaussian p̃; inf when a node failed).

    Examples
    --------
    >>> z = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, -2.0]])
    >>> round(gaussian_misfit(z, -0.5 * np.sum(z**2, 1) + [0.0, 0.0, 0.4]), 12)
    0.4
    """
    if not np.all(np.isfinite(logp)):
        return float("inf")
    return float(np.max(np.abs(logp - logp[0] + 0.5 * np.sum(z**2, axis=1))))
