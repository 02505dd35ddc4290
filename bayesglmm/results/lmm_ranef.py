"""Per-group conditional covariances of the random effects, and statsmodels' ``profile_re``.

Both use only the model's level-coded terms: a group's random-effect design ``Z_g`` is formed
for that group's rows alone (``n_g × k_g``, never the full n × levels matrix).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["profile_re", "random_effects_cov"]


def _coords_by_group(res) -> dict:
    """``{group: [(term, level, column, name), ...]}``: each group's random-effect
    coordinates in the order of ``res.random_effects[group]`` (one pass over the levels)."""
    d = res.model.design
    gt = d.terms[d.groups_term] if d.groups_term is not None else None
    out: dict = {g: [] for g in res.model.group_labels}
    for i, t in enumerate(d.terms):
        if gt is not None and t.group != gt.group:
            continue
        if isinstance(t.index, pd.MultiIndex):
            for lvl, (g, cell) in enumerate(t.index):
                if g in out:
                    out[g].append((i, lvl, 0, f"{t.name}[{cell}]"))
        else:
            for lvl, g in enumerate(t.index):
                if g in out:
                    out[g] += [(i, lvl, j, c) for j, c in enumerate(t.cols)]
    return out


def random_effects_cov(res) -> dict:
    """``{group: DataFrame (k_g, k_g)}``: Cov(b_g | y) = G − G Zᵀ(σ̂² I + Z G Zᵀ)⁻¹ Z G."""
    d = res.model.design
    if d.group_labels is None:
        raise ValueError("random_effects_cov needs a model with `groups` (statsmodels' layout)")
    covs = [c.to_numpy() for c in res.term_cov]
    rows_of = res.model.row_indices
    out = {}
    for g, coords in _coords_by_group(res).items():
        rows = rows_of[g]
        k = len(coords)
        z = np.zeros((len(rows), k))
        G = np.zeros((k, k))
        for a, (i, lvl, j, _) in enumerate(coords):
            t = d.terms[i]
            z[:, a] = np.where(t.codes[rows] == lvl, t.z[rows, j], 0.0)
            for b in range(a, k):  # coordinates of one level of one term are correlated
                i2, lvl2, j2, _ = coords[b]
                if i2 == i and lvl2 == lvl:
                    G[a, b] = G[b, a] = covs[i][j, j2]
        zg = z @ G
        v = res.scale * np.eye(len(rows)) + zg @ z.T
        c = G - zg.T @ np.linalg.solve(v, zg)
        names = [name for *_, name in coords]
        out[g] = pd.DataFrame(c, index=names, columns=names)
    return out


def profile_re(res, re_ix, vtype, num_low, dist_low, num_high, dist_high) -> np.ndarray:
    """statsmodels' ``profile_re``: fix one variance (``vtype="re"``: ``cov_re[re_ix, re_ix]``;
    ``"vc"``: the variance component named ``re_ix``) at a grid around its estimate and
    maximise the (RE)ML log-likelihood over the other covariance parameters.

    Returns ``(num_low + num_high + 1, 2)``: the variance (absolute scale) and the
    log-likelihood; row ``num_low`` is the estimate itself.  The inner maximisation is
    L-BFGS-B on the profiled deviance with its gradient by ``jax.value_and_grad``.
    """
    import jax
    import jax.numpy as jnp
    import scipy.optimize

    from .._precision import precision
    from ..kernels.lmm import deviance, factor

    model = res.model
    if vtype == "re":
        t = model._re_term
        if t is None or not 0 <= int(re_ix) < t.q:
            raise ValueError(f"re_ix must index the random effects of groups, got {re_ix!r}")
        ti = model._theta_index[model.design.terms.index(t)]
        row = [int(v) for v in ti[int(re_ix)] if v >= 0]  # θ entries of row re_ix of λ
        est = float(np.asarray(res._cov_re_s)[int(re_ix), int(re_ix)])
    elif vtype == "vc":
        names = model._vc_names()
        if re_ix not in names:
            raise ValueError(f"re_ix must name a variance component {names}, got {re_ix!r}")
        ti = model._blocks[[k for k, (kind, _) in enumerate(model._blocks)
                            if kind == "vc"][names.index(re_ix)]][1]
        row = [int(ti[0, 0])]
        est = float(np.asarray(res.vcomp)[names.index(re_ix)])
    else:
        raise ValueError(f"vtype must be 're' or 'vc', got {vtype!r}")
    scale = res.scale
    low, high = (est - dist_low) / scale, (est + dist_high) / scale
    if low <= 0:
        raise ValueError("dist_low is too large and would result in a negative variance; "
                         "try a smaller value")
    ru0 = est / scale
    grid = np.concatenate([np.linspace(low, ru0, num_low + 1),
                           np.linspace(ru0, high, num_high + 1)[1:]])
    free = np.setdiff1d(np.arange(model.n_theta), row)
    theta_hat = np.asarray(res.theta, np.float64)
    u0 = theta_hat[row] / max(float(np.linalg.norm(theta_hat[row])), 1e-12)
    reml = res.reml
    with precision(np.float64):
        cp, st = model._crossprod(np.float64)
        p = cp.xy.shape[0] - 1
        nu = cp.n - p if reml else cp.n

        def theta_of(x, r):
            # the fixed row of λ has squared norm r (the relative variance): λ_i = √r u/|u|
            th = jnp.zeros(model.n_theta).at[free].set(x[: len(free)])
            u = x[len(free):]
            return th.at[np.asarray(row)].set(jnp.sqrt(r) * u / jnp.linalg.norm(u))

        fg = jax.jit(jax.value_and_grad(lambda x, r: deviance(theta_of(x, r), cp, st, reml)))
        lo = np.concatenate([model._lower[free], np.full(len(row), -np.inf)])
        bounds = [(None if np.isinf(b) else b, None) for b in lo]
        out = []
        for r in grid:
            x0 = np.concatenate([theta_hat[free], u0])
            sol = scipy.optimize.minimize(
                lambda x, r=r: tuple(np.asarray(v, np.float64) for v in fg(jnp.asarray(x), r)),
                x0,
                jac=True, method="L-BFGS-B", bounds=bounds,
                options={"ftol": 1e-13, "gtol": 1e-8, "maxiter": 2000})
            dev = float(sol.fun)
            s2 = float(factor(theta_of(jnp.asarray(sol.x), r), cp, st).pwrss) / float(nu)
            out.append([r * s2, -dev / 2.0])
    return np.asarray(out)
