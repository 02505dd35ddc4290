"""Sharded against single-device fits, run in a subprocess with 4 forced CPU devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX is imported, so
tests/test_sharding.py runs this script once per mode and reads its JSON from stdout:

    python tests/sharding_check.py quick   # a few objectives, placement, defaults
    python tests/sharding_check.py slow    # every fit's objective and gradient, and the fits

Each item is a dict of numbers (relative or absolute differences, shapes) that the tests
assert on, one test per item.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("BAYESGLMM_CACHE_DIR", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bayesglmm import (BinomialBayesMixedGLM, NegativeBinomialBayesMixedGLM,  # noqa: E402
                       PoissonBayesMixedGLM, datasets,
                       mixedlm)
from bayesglmm._precision import precision  # noqa: E402
from bayesglmm.fits import laplace as _laplace  # noqa: E402
from bayesglmm.fits.map import map_objective  # noqa: E402
from bayesglmm.fits.vb import vb_objective  # noqa: E402
from bayesglmm.sharding import make_mesh, shard_rows  # noqa: E402

F64 = np.float64


def glmm_models() -> dict:
    """The mixed GLMs checked: cbpp (binomial, one factor), a crossed binomial (two factors,
    simulated), grouseticks (Poisson, two factors)."""
    cbpp = BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
        n_trials="size")
    rs = np.random.default_rng(3)
    a, b = np.meshgrid(np.arange(12), np.arange(10), indexing="ij")
    df = pd.DataFrame({"a": np.repeat(a.ravel(), 2), "b": np.repeat(b.ravel(), 2)})
    df["x"] = rs.normal(size=len(df))
    eta = -0.3 + 0.5 * df.x + rs.normal(size=12)[df.a] * 0.8 + rs.normal(size=10)[df.b] * 0.6
    df["y"] = (rs.uniform(size=len(df)) < 1 / (1 + np.exp(-eta))).astype(float)
    crossed = BinomialBayesMixedGLM.from_formula(
        "y ~ x", {"a": "0 + C(a)", "b": "0 + C(b)"}, df)
    grouse = PoissonBayesMixedGLM.from_formula(
        "TICKS ~ YEAR + cHEIGHT", {"BROOD": "0 + C(BROOD)", "LOCATION": "0 + C(LOCATION)"},
        datasets.load("grouseticks"))
    return {"cbpp": cbpp, "crossed": crossed, "poisson": grouse}


def lmm_models() -> dict:
    """sleepstudy (REML, correlated random slope) and penicillin (crossed intercepts)."""
    return {"sleepstudy": mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")),
            "crossed": mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)",
                               datasets.load("penicillin"))}


def rel(a, b) -> float:
    """max |a − b| / max(|b|, tiny) over the entries (flattened pytrees)."""
    a = np.concatenate([np.ravel(np.asarray(x, F64)) for x in jax.tree.leaves(a)])
    b = np.concatenate([np.ravel(np.asarray(x, F64)) for x in jax.tree.leaves(b)])
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def objectives(model, mesh, laplace: bool = True) -> dict:
    """The fits' objectives and gradients at fixed parameters (``laplace``: fit_laplace's
    too), on the 1-device padded data against the same data sharded over ``mesh``."""
    fine = model._fine(model.k_fep + model.k_vcp + model.k_vc)
    one = model._data(True, fine)
    four = model._data(True, fine, mesh)
    prior = model._prior()
    kf, kp, k = model.k_fep, model.k_vcp, one.ident.shape[0]
    rs = np.random.default_rng(0)
    a = np.concatenate([rs.normal(size=kf) * 0.3, np.full(kp, -0.5)])
    u = rs.normal(size=(k, 1))
    out = {}
    with precision(F64):
        vg = jax.jit(jax.value_and_grad(map_objective(model.family), argnums=(0, 1)))
        out["map"] = (rel(vg(a, u, four, prior), vg(a, u, one, prior)))
        av = np.concatenate([a, np.full(kf + kp, -1.0)])
        v = np.column_stack([u[:, 0], np.full(k, -1.0)])
        vg = jax.jit(jax.value_and_grad(vb_objective(model.family, model.vb_rule),
                                        argnums=(0, 1)))
        out["vb"] = rel(vg(av, v, four, prior), vg(av, v, one, prior))
        if not laplace:
            return out
        _, mode = model._padded_design(fine)
        kern = _laplace.laplace_kernels(model.family, mode, True, _laplace.default_options(F64))
        args = (np.zeros(k), np.zeros((k, kf + kp)), np.zeros(kf + kp))
        f1, u1 = kern.value(a, *args, one, prior)
        # u1 comes from the one-device program (committed to its device when it ran as a stored
        # program, bayesglmm._export): hand it to the 4-device call as host data
        u1 = np.asarray(u1)
        f4, _ = kern.value(a, *args, four, prior)
        out["laplace_value"] = rel(f4, f1)
        # −J, −∇J, −∇²J at the same u* (the inner solve's tolerance aside)
        out["laplace_grad"] = rel(kern.vgh(a, u1, four, prior)[:3],
                                  kern.vgh(a, u1, one, prior)[:3])
    return out


def lmm_objectives(model, mesh) -> dict:
    """Deviance and gradient from cross-products summed on 4 devices against the host's."""
    from bayesglmm.kernels.lmm import deviance

    theta = model._start() * 1.1 + 0.05
    out = {}
    with precision(F64):
        cp1, st = model._crossprod(F64)
        cp4, st4 = model._crossprod(F64, None, mesh)
        assert st4 == st
        for reml in (True, False):
            vg = jax.value_and_grad(lambda th, cp, r=reml: deviance(th, cp, st, r))
            out["reml" if reml else "ml"] = rel(vg(theta, cp4), vg(theta, cp1))
        out["crossprod"] = rel(cp4, cp1)
    return out


def placement(mesh) -> dict:
    """Shapes of the sharded arrays: rows split in 4 (padded to a multiple of 4 where
    needed), level-wise arrays whole on every device."""
    m = glmm_models()["poisson"]
    m._pad = False  # no shape buckets: 403 rows, padded to 404 for 4 devices
    d = m._data(True, False, mesh)
    shards = [s.data.shape[0] for s in d.y.addressable_shards]
    out = {"n": m.nobs, "n_rows": d.y.shape[0], "shard_rows": shards,
           "shard_shape": list(d.Z.cols.sharding.shard_shape(d.Z.cols.shape)),
           "cols_shards": [list(s.data.shape) for s in d.Z.cols.addressable_shards],
           "level_replicated": bool(d.ident.sharding.is_fully_replicated
                                    and d.const.sharding.is_fully_replicated),
           "pad_inert": bool(np.all(np.asarray(d.weights)[m.nobs:] == 0)
                             and np.all(np.asarray(d.n_trials)[m.nobs:] == 1)
                             and np.all(np.asarray(d.Z.vals)[m.nobs:] == 0))}
    with precision(F64):  # padding rows for the mesh changes no value
        one = m._data(True, False)
        prior = m._prior()
        a = np.zeros(m.k_fep + m.k_vcp)
        u = np.full((one.ident.shape[0], 1), 0.1)
        vg = jax.jit(jax.value_and_grad(map_objective(m.family), argnums=(0, 1)))
        out["pad_rel"] = rel(vg(a, u, d, prior), vg(a, u, one, prior))
        out["shard_rows_rel"] = rel(vg(a, u, shard_rows(one, mesh), prior),
                                    vg(a, u, one, prior))
    # the LMM's row arrays (dyestuff: 30 rows, padded to 32)
    from bayesglmm.design.crossprod_sharded import row_arrays
    from bayesglmm.sharding import put_rows

    lm = mixedlm("Yield ~ 1 + (1 | Batch)", datasets.load("dyestuff"))
    d = lm.design
    rows, _, _ = row_arrays(d.X, d.y, [t.codes for t in d.terms], [t.z for t in d.terms])
    with precision(F64):
        xy = put_rows(rows[0], mesh)
        cp1, _ = lm._crossprod(F64)
        cp4, _ = lm._crossprod(F64, None, mesh)
    out["lmm_shard_rows"] = [s.data.shape[0] for s in xy.addressable_shards]
    out["lmm_pad_rel"] = rel(cp4, cp1)
    return out


def collectives(mesh) -> dict:
    """The collectives XLA inserted in two partitioned programs (fit_map's objective and
    gradient on cbpp; the LMM's pass over penicillin's rows): all-reduces of the row sums,
    no all-gather of the rows."""
    import re

    def count(txt):
        ops = re.findall(r"\s(all-gather|all-reduce|all-to-all|reduce-scatter)(?:-start)?\(", txt)
        return {op: ops.count(op) for op in ("all-gather", "all-reduce", "all-to-all",
                                             "reduce-scatter")}

    from bayesglmm.design.crossprod_sharded import _pass_program, row_arrays
    from bayesglmm.sharding import put_rows

    m = glmm_models()["cbpp"]
    lm = lmm_models()["crossed"]
    d = lm.design
    terms = [d.terms[i] for i in lm._order]  # largest first, as the cross-products
    rows, keys, n2 = row_arrays(d.X, d.y, [t.codes for t in terms], [t.z for t in terms])
    L1 = int(terms[0].codes.max()) + 1
    with precision(F64):
        data = m._data(True, False, mesh)
        a, u = np.zeros(m.k_fep + m.k_vcp), np.zeros((data.ident.shape[0], 1))
        vg = jax.jit(jax.value_and_grad(map_objective(m.family), argnums=(0, 1)))
        out = {"map": count(vg.lower(a, u, data, m._prior()).compile().as_text())}
        dev = [put_rows(r, mesh) for r in rows]
        out["lmm_pass"] = count(_pass_program(L1, n2, len(keys), mesh).lower(*dev)
                                .compile().as_text())
    return out


def defaults() -> dict:
    """devices=None: single-device arrays and results identical to the call without it."""
    m = glmm_models()["cbpp"]
    r0, r1 = m.fit_map(rng=0), m.fit_map(rng=0, devices=None)
    d = m._data(True, m._fine(m.k_fep + m.k_vcp + m.k_vc))
    lm = lmm_models()["sleepstudy"]
    l0, l1 = lm.fit(), lm.fit(devices=None)
    return {"glmm_identical": bool(np.array_equal(r0.params, r1.params)),
            "single_device": len(d.y.sharding.device_set) == 1,
            "cache_keys": [len(k) for k in m._data_cache],
            "lmm_identical": bool(np.array_equal(l0.params, l1.params)),
            "lmm_cache_keys": [len(k) for k in lm._cp]}


def diff(r4, r1) -> dict:
    """Largest absolute differences of a GLMM result's estimates and posterior SDs."""
    sd = [np.concatenate([r.fe_sd, r.vcp_sd, r.vc_sd]) for r in (r4, r1)]
    return {"params": float(np.max(np.abs(r4.params - r1.params))),
            "sd": float(np.nanmax(np.abs(sd[0] - sd[1]))),
            "converged": bool(r4.converged and r1.converged)}


def full_fits() -> dict:
    """Every fit with devices=4 against devices=None: largest absolute difference of the
    estimates (and of the covariance where it is a matrix)."""
    out = {}
    for name, m in glmm_models().items():
        for fit, kw in (("fit_map", {"rng": 0}), ("fit_vb", {"rng": 0}),
                        ("fit_laplace", {})):  # its programs are those of objectives()
            r1, r4 = getattr(m, fit)(**kw), getattr(m, fit)(devices=4, **kw)
            out[f"{name}.{fit}"] = diff(r4, r1)
    m = glmm_models()["cbpp"]
    r1 = m.fit_laplace(integrate=True)
    r4 = m.fit_laplace(integrate=True, devices="all")
    out["cbpp.integrate"] = diff(r4, r1)
    r1, r4 = m.fit_map(scale_fe=True, rng=0), m.fit_map(scale_fe=True, rng=0, devices=4)
    out["cbpp.scale_fe"] = diff(r4, r1)
    # the negative binomial (log θ among the variance parameters): glmer.nb's fit
    nb = NegativeBinomialBayesMixedGLM.from_formula(
        "TICKS ~ YEAR + cHEIGHT", {"BROOD": "0 + C(BROOD)", "LOCATION": "0 + C(LOCATION)"},
        datasets.load("grouseticks"))
    for fit, kw in (("fit_laplace", {"priors": False}), ("fit_laplace", {"priors": True})):
        r1, r4 = getattr(nb, fit)(**kw), getattr(nb, fit)(devices=4, **kw)
        out[f"negbin.{fit}.{'priors' if kw['priors'] else 'ml'}"] = diff(r4, r1)
    for name, lm in lmm_models().items():
        for reml in (True, False):
            r1, r4 = lm.fit(reml=reml), lm.fit(reml=reml, devices=4)
            out[f"lmm.{name}.{'reml' if reml else 'ml'}"] = {
                "params": float(np.max(np.abs(r4.params - r1.params))),
                "bse": float(np.max(np.abs(r4.bse - r1.bse))),
                "llf": float(abs(r4.llf - r1.llf))}
    return out


def main(mode: str) -> dict:
    """``quick`` (the default run's: cbpp's fit_map/fit_vb objectives, sleepstudy's deviance,
    placement, defaults) or ``slow`` (every model's objectives, then the fits)."""
    assert len(jax.devices()) == 4, jax.devices()
    mesh = make_mesh(4)
    if mode == "quick":
        return {"glmm.cbpp": objectives(glmm_models()["cbpp"], mesh, laplace=False),
                "lmm.sleepstudy": lmm_objectives(lmm_models()["sleepstudy"], mesh),
                "placement": placement(mesh), "collectives": collectives(mesh),
                "defaults": defaults()}
    out = {f"glmm.{name}": objectives(m, mesh) for name, m in glmm_models().items()}
    out.update({f"lmm.{name}": lmm_objectives(m, mesh) for name, m in lmm_models().items()})
    out.update(full_fits())
    return out


if __name__ == "__main__":
    json.dump(main(sys.argv[1] if len(sys.argv) > 1 else "quick"), sys.stdout)
