"""Profile-likelihood confidence intervals (lme4's ``confint(method = "profile")``).

For each parameter φ_j on lme4's scale — random-effect SDs and correlations, the residual SD
σ (linear models) and the fixed effects — the profiled ML deviance

    d_j(c) = min { d(φ) : φ_j = c },    ζ_j(c) = sign(c − φ̂_j) √(d_j(c) − d(φ̂))

is computed by minimising over the other parameters (warm-started along the profile), and the
interval is where ζ_j = ∓z, z = Φ⁻¹(1 − α/2), found by Brent's root-finder on ζ_j itself
(lme4 evaluates ζ on a grid and interpolates by splines; the root-find is exact to the
tolerance of the inner minimisation).  As lme4, REML fits are profiled on the ML deviance (the
model is refitted by ML).  A limit beyond a parameter's bound (an SD of 0, a correlation of ±1)
is reported at that bound.

* linear models: d(φ) = log|L_θ|² + r²(θ, β)/σ² + n log(2πσ²) with (θ, σ) from (SDs,
  correlations, σ) (:mod:`._lmm`); inner minimisation by L-BFGS-B on the exact autodiff
  gradient;
* mixed GLMs (``fit_laplace(priors=False)``): d = −2ℓ, ℓ the Laplace log-likelihood of (fe,
  vcp = log SD), minimised by Newton with the exact Hessians of the fit's own jitted kernels
  (:func:`bayesglmm.fits.laplace.laplace_kernels`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["profile_conf_int", "profile_interval"]

_SD_FLOOR = 1e-6  # profiles of SDs stop here (reported as 0 when ζ has not reached −z)


def profile_interval(zeta, est, step, lo_bound, hi_bound, z, xtol=1e-8):
    """The interval ``{c : |ζ(c)| ≤ z}`` of a monotone profile ζ with ζ(est) = 0.

    ``step`` (> 0) is the first step out from ``est``; it doubles until ζ passes ∓z or the
    bound is reached (then the bound is the limit).  ``zeta(c)`` may keep warm-start state.
    """
    from scipy.optimize import brentq

    out = []
    for sign, bound in ((-1.0, lo_bound), (1.0, hi_bound)):
        a, h, found = est, step, False
        for _ in range(60):
            b = est + sign * h
            if (b - bound) * sign >= 0:
                b = bound
            zb = zeta(b)
            if abs(zb) >= z:
                found = True
                break
            if b == bound:
                break
            a, h = b, 2.0 * h
        if not found:
            out.append(bound)
            continue
        out.append(brentq(lambda c: abs(zeta(c)) - z, a, b, xtol=xtol, rtol=1e-12))
    return out[0], out[1]


def _projected_newton(value, derivs, x, lo, hi, free, maxiter=200):
    """Minimise ``value`` over the ``free`` coordinates of x within [lo, hi]: Newton steps
    with the exact Hessian (|eigenvalue|-modified), bound-active coordinates held, Armijo
    backtracking; stops when the decrement ½gᵀH⁻¹g ≤ 1e-13 (1 + |f|).  Returns ``(f, x)`` at
    the minimum."""
    from ..linalg.psd import abs_inv

    x = np.clip(np.asarray(x, np.float64), lo, hi)
    f = value(x)
    for _ in range(maxiter):
        f, g, H = derivs(x)
        f = float(f)
        act = ~free | ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        gf = np.where(act, 0.0, g)
        Hf = np.where(act[:, None] | act[None, :], np.eye(len(x)), H)
        d = -abs_inv(Hf, xp=np) @ gf
        if -0.5 * float(gf @ d) <= 1e-13 * (1 + abs(f)):
            break
        t = 1.0
        for _ in range(50):
            new = np.clip(x + t * d, lo, hi)
            fn = value(new)
            if fn <= f + 1e-4 * float(g @ (new - x)):
                break
            t *= 0.5
        else:
            break
        x = new
    return float(value(x)), x


# ---------------------------------------------------------------- linear mixed models
def _lmm_profiler(ml):
    """(names, φ̂, d̂, lower, upper, se, dev_min(j, c, x0) -> (d, x), shift) of an ML fit; JAX
    in 64 bits (the returned dev_min must be called under ``precision(float64)`` too)."""
    from .._precision import precision

    with precision(np.float64):
        return _lmm_profiler64(ml)


def _lmm_profiler64(ml):
    import jax
    import jax.numpy as jnp

    from ._lmm import factors, lmm_parts, sd_scale_names, sv_to_theta, theta_to_sv

    parts = lmm_parts(ml.model)
    n, k = parts.n, parts.struct.n_theta + 1
    model = ml.model

    def dev(phi):  # ML deviance of (SDs, correlations, σ, β) — β of the centred response
        theta, sigma = sv_to_theta(phi[:k], parts)
        f, t = factors(theta, parts)
        v = jnp.concatenate([-phi[k:], jnp.ones(1, phi.dtype)])
        s2 = sigma**2
        return f.logdet_l + (v @ t @ v) / s2 + n * jnp.log(2 * jnp.pi * s2)

    val = jax.jit(dev)
    vgh = jax.jit(lambda x: (dev(x), jax.grad(dev)(x), jax.hessian(dev)(x)))
    beta = ml._fe_s.to_numpy().copy()
    if parts.icol >= 0:
        beta[parts.icol] -= parts.yshift
    sv = np.asarray(theta_to_sv(jnp.asarray(ml.theta), np.sqrt(ml.scale), parts))
    phi_hat = np.concatenate([sv, beta])
    names = sd_scale_names(model) + list(ml._fe_s.index)
    lo = np.full(len(phi_hat), -np.inf)
    hi = np.full(len(phi_hat), np.inf)
    for i, nm in enumerate(names[:k]):
        if nm.startswith("cor_"):
            lo[i], hi[i] = -1 + 1e-9, 1 - 1e-9
        else:
            lo[i] = _SD_FLOOR * max(phi_hat[k - 1], 1.0) if nm == "sigma" else 0.0
    value = lambda x: float(val(jnp.asarray(x)))  # noqa: E731
    derivs = lambda x: tuple(np.asarray(a, np.float64) for a in vgh(jnp.asarray(x)))  # noqa: E731
    d_hat, phi_hat = _projected_newton(value, derivs, phi_hat, lo, hi,
                                       np.ones(len(phi_hat), bool))
    hess = derivs(phi_hat)[2]
    se = np.sqrt(np.abs(np.diag(2.0 * np.linalg.pinv(hess))))

    def dev_min(j, c, x0):
        x = x0.copy()
        x[j] = c
        free = np.arange(len(phi_hat)) != j
        return _projected_newton(value, derivs, x, lo, hi, free)

    shift = np.zeros(len(phi_hat))
    if parts.icol >= 0:
        shift[k + parts.icol] = parts.yshift  # the intercept back on the response's scale
    return names, phi_hat, d_hat, lo, hi, se, dev_min, shift


# ---------------------------------------------------------------- mixed GLMs (Laplace)
def _glmm_profiler(res):
    """As :func:`_lmm_profiler` for a ``fit_laplace(priors=False)`` fit, φ = (fe, SDs)."""
    from .._precision import precision
    from ..fits.laplace import LOG_SD_MIN, laplace_kernels, small_programs
    from ..linalg._blas import single_threaded_blas
    from ..linalg.psd import abs_inv

    model = res.model
    if model._corr:
        raise ValueError("profile intervals of mixed GLMs with correlated terms are not "
                         "supported; use method='Wald'")
    kf, kv = model.k_fep, model.k_vcp
    fine = model._fine(kf + kv + model.k_vc)
    _, mode = model._padded_design(fine)
    data, prior = model._data(True, fine), model._prior()
    opts = res.optim_retvals.opts if hasattr(res.optim_retvals, "opts") else None
    if opts is None:
        from ..fits.laplace import default_options
        opts = default_options(model.dtype)
    kern = laplace_kernels(model.family, mode, False, opts, small_programs(data))  # the fit's
    dtype = model.dtype
    theta_hat = np.concatenate([res.fe_mean, res.vcp_mean]).astype(np.float64)
    k_pad = int(data.ident.shape[0])

    def newton(theta, free, maxiter=100):
        """Minimise −ℓ over the free coordinates from θ (Armijo backtracking)."""
        no = (np.zeros((k_pad, len(theta)), dtype), np.zeros(len(theta), dtype))
        f, u = kern.value(theta.astype(dtype), np.zeros(k_pad, dtype), *no, data, prior)
        lb = np.r_[np.full(kf, -np.inf), np.full(kv, LOG_SD_MIN)]
        for _ in range(maxiter):
            f, g, H, duF = (x for x in kern.vgh(theta.astype(dtype), u, data, prior))
            g = np.asarray(g, np.float64)
            act = ~free | ((theta <= lb + 1e-10) & (g > 0))
            gf = np.where(act, 0.0, g)
            Hf = np.where(act[:, None] | act[None, :], np.eye(len(theta)), np.asarray(H))
            d = -abs_inv(Hf, xp=np) @ gf
            dec = -0.5 * float(gf @ d)
            if dec <= 1e-13 * (1 + abs(float(f))):
                break
            d = d / max(1.0, np.max(np.abs(d)) / 5.0)
            t, ok = 1.0, False
            for _ in range(40):
                new = np.maximum(theta + t * d, lb)
                f1, u1 = kern.value(new.astype(dtype), u, duF[0], (new - theta).astype(dtype),
                                    data, prior)
                if float(f1) <= float(f) + 1e-4 * t * float(gf @ d):
                    ok = True
                    break
                t *= 0.5
            if not ok:
                break
            theta, u = new, u1
        return 2.0 * float(f), theta

    with precision(dtype), single_threaded_blas():
        d_hat, theta_hat = newton(theta_hat, np.ones(kf + kv, bool))
        _, g, H, _ = kern.vgh(theta_hat.astype(dtype), kern.value(
            theta_hat.astype(dtype), np.zeros(k_pad, dtype),
            np.zeros((k_pad, kf + kv), dtype), np.zeros(kf + kv, dtype), data, prior)[1],
            data, prior)
    cov = abs_inv(np.asarray(H, np.float64), xp=np)
    sd_hat = np.exp(theta_hat[kf:])
    phi_hat = np.r_[sd_hat, theta_hat[:kf]]  # lme4's order: SDs, then fixed effects
    se = np.sqrt(np.abs(np.r_[sd_hat**2 * np.diag(cov)[kf:], np.diag(cov)[:kf]]))
    k_sd = kv - model.family.n_disp  # the negative binomial's θ last, profiled as an SD is
    names = ([f"sd_Intercept|{nm}" for nm in model.vcp_names[:k_sd]]
             + ["theta"] * model.family.n_disp + list(model.fep_names))
    lo = np.r_[np.zeros(kv), np.full(kf, -np.inf)]
    hi = np.full(kf + kv, np.inf)

    def dev_min(j, c, x0):
        theta = x0.copy()
        if j < kv:  # an SD: its log SD is fixed
            theta[kf + j] = max(np.log(max(c, 1e-300)), LOG_SD_MIN)
        else:
            theta[j - kv] = c
        free = np.ones(kf + kv, bool)
        free[kf + j if j < kv else j - kv] = False
        with precision(dtype), single_threaded_blas():
            d, theta = newton(theta, free)
        return d, theta

    return names, phi_hat, d_hat, lo, hi, se, dev_min, theta_hat


def profile_conf_int(results, alpha=0.05):
    """Profile-likelihood intervals of every parameter on lme4's scale.

    Parameters
    ----------
    results : MixedLMResults or BayesMixedGLMResults
        A MixedLM fit (REML fits are profiled on the ML deviance, as lme4) or a
        ``fit_laplace(priors=False)`` fit.
    alpha : float
        1 − coverage.

    Returns
    -------
    DataFrame
        Rows ``sd_<col>|<group>``, ``cor_<col>.<col>|<group>``, ``sigma`` (linear models) and
        the fixed effects; columns ``0`` and ``1`` (lower, upper), as ``conf_int()``.

    Examples
    --------
    >>> from bayesglmm import datasets, mixedlm
    >>> r = mixedlm("Reaction ~ Days + (1 | Subject)", datasets.load("sleepstudy")).fit()
    >>> ci = r.conf_int(method="profile")
    >>> round(float(ci.loc["Days", 0]), 2), round(float(ci.loc["Days", 1]), 2)
    (8.89, 12.05)
    """
    import pandas as pd
    from scipy.special import ndtri

    from .._precision import precision
    from .lrt import _kind

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    z = float(ndtri(1 - alpha / 2))
    if _kind(results) == "lmm":
        ml = results.model.fit(reml=False) if results.reml else results
        names, phi_hat, d_hat, lo, hi, se, dev_min64, shift = _lmm_profiler(ml)

        def dev_min(j, c, x0):
            with precision(np.float64):  # 64-bit JAX only inside bayesglmm's calls
                return dev_min64(j, c, x0)
        warm_of = lambda j: phi_hat.copy()  # noqa: E731
    else:
        names, phi_hat, d_hat, lo, hi, se, dev_min, theta_hat = _glmm_profiler(results)
        shift = np.zeros(len(phi_hat))
        warm_of = lambda j: theta_hat.copy()  # noqa: E731
    rows = []
    for j in range(len(phi_hat)):
        state = {"x": warm_of(j)}

        def zeta(c, j=j, state=state):
            d, x = dev_min(j, c, state["x"])
            state["x"] = x
            return np.sign(c - phi_hat[j]) * np.sqrt(max(d - d_hat, 0.0))

        step = se[j] if np.isfinite(se[j]) and se[j] > 0 else max(abs(phi_hat[j]), 1.0) * 0.1
        a, b = profile_interval(zeta, phi_hat[j], step, lo[j], hi[j], z)
        if names[j].startswith("cor_"):
            a, b = (-1.0 if a <= lo[j] else a), (1.0 if b >= hi[j] else b)
        rows.append((a + shift[j], b + shift[j]))
    return pd.DataFrame(rows, index=names, columns=[0, 1])


def conf_int_method(results, alpha=0.05, method="profile"):
    """``conf_int(method=...)``: ``"profile"`` (:func:`profile_conf_int`), ``"boot"``
    (percentile intervals of :func:`bayesglmm.inference.bootstrap`, 1000 replicates, seed 0;
    linear models) or, for mixed GLM results, ``"wald"`` (``mean ± z·sd`` of fe and vcp, the
    log SDs)."""
    from ..results.glmm import BayesMixedGLMResults

    if method == "profile":
        return profile_conf_int(results, alpha)
    if method == "wald" and isinstance(results, BayesMixedGLMResults):
        return results.conf_int(alpha, "wald")
    if method in ("boot", "bootstrap"):
        from .bootstrap import bootstrap

        return bootstrap(results, n=1000, seed=0, alpha=alpha).conf_int
    raise ValueError(f"method must be 'wald', 'profile' or 'boot', got {method!r}")
