"""Exact posterior of the grouseticks Poisson GLMM by NUTS: the reference that
tests/fits/test_integrate.py checks ``fit_laplace(priors=True, integrate=True)`` against.

Model (the same as ``PoissonBayesMixedGLM`` with statsmodels' priors, kernels/glmm.py)::

    TICKS_i ~ Poisson(exp(η_i)),   η = X·fe + Z·vc,   X: Intercept, YEAR (96, 97), cHEIGHT
    fe ~ N(0, fe_p²),  vcp_c ~ N(0, vcp_p²)  (log SD of BROOD, INDEX, LOCATION)
    vc_j ~ N(0, exp(vcp[ident_j])²)           (118 BROOD, 403 INDEX, 63 LOCATION levels)

sampled in the non-centred coordinates vc = exp(vcp[ident])·u, u ~ N(0, I) (the same
posterior of (fe, vcp, vc); NUTS mixes far better there).  X, Z and ident are taken from
bayesglmm's design of the formula so that columns and levels match; the likelihood and the
priors are written here independently with numpyro's distributions.

numpyro is a tool of this script only, not a dependency of bayesglmm (``pip install
numpyro``).  Run from the repository root (each prior about 10 CPU minutes; 35 minutes on
2 cores busy with other jobs)::

    python tests/reference/nuts_grouseticks.py            # writes posterior_nuts_grouseticks.json
    python tests/reference/nuts_grouseticks.py --vcp-p 0.5   # one prior (runs can go in
                                                             # parallel; each merges its fit)

For each vcp_p in {1, 0.5} (fe_p = 2): 4 chains × ``DRAWS`` draws after ``WARMUP`` warm-up
steps, target acceptance 0.9.  The script fails unless every parameter's split R-hat is
≤ 1.01, and records the smallest effective sample size of fe and vcp and the implied Monte
Carlo error of their posterior SDs (≈ 1/√(2·ESS) relative, ≤ 1% needs ESS ≥ 5000).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS

import bayesglmm as bg
from bayesglmm import datasets

OUT = Path(__file__).with_name("posterior_nuts_grouseticks.json")
WARMUP, DRAWS, CHAINS = 1500, 10000, 4
FORMULA = "TICKS ~ YEAR + cHEIGHT"
VC = {"BROOD": "0 + C(BROOD)", "INDEX": "0 + C(INDEX)", "LOCATION": "0 + C(LOCATION)"}


def design():
    """(y, X, Z dense, ident, fe names, vcp names, vc names) from bayesglmm's formula."""
    m = bg.PoissonBayesMixedGLM.from_formula(FORMULA, VC, datasets.load("grouseticks"))
    return (np.asarray(m.endog, float), np.asarray(m.exog, float), m.exog_vc.toarray(),
            np.asarray(m.ident), m.fep_names, m.vcp_names, m.vc_names)


def model(y, X, Z, ident, fe_p, vcp_p):
    fe = numpyro.sample("fe", dist.Normal(0.0, fe_p).expand([X.shape[1]]).to_event(1))
    vcp = numpyro.sample("vcp", dist.Normal(0.0, vcp_p).expand([int(ident.max()) + 1])
                         .to_event(1))
    u = numpyro.sample("u", dist.Normal(0.0, 1.0).expand([Z.shape[1]]).to_event(1))
    vc = numpyro.deterministic("vc", jnp.exp(vcp)[ident] * u)
    numpyro.sample("y", dist.Poisson(jnp.exp(X @ fe + Z @ vc)).to_event(1), obs=y)


def run(vcp_p: float, fe_p: float = 2.0, seed: int = 0) -> dict:
    y, X, Z, ident, fe_names, vcp_names, vc_names = design()
    mcmc = MCMC(NUTS(model, target_accept_prob=0.9), num_warmup=WARMUP, num_samples=DRAWS,
                num_chains=CHAINS, chain_method="sequential", progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), y, X, Z, ident, fe_p, vcp_p)
    seconds = time.perf_counter() - t0
    s = mcmc.get_samples(group_by_chain=True)  # (chains, draws, ...)
    rhat = {k: float(np.max(split_gelman_rubin(np.asarray(s[k])))) for k in ("fe", "vcp", "vc")}
    ess = {k: float(np.min(effective_sample_size(np.asarray(s[k])))) for k in ("fe", "vcp",
                                                                           "vc")}
    if max(rhat.values()) > 1.01:
        sys.exit(f"R-hat above 1.01 at vcp_p={vcp_p}: {rhat}")
    flat = {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in s.items()}
    r = lambda a: [round(float(x), 5) for x in a]  # noqa: E731
    level = [n.split("[")[-1].rstrip("]") for n in vc_names]

    def per_component(a):
        return {c: {level[j]: v for j, v in enumerate(r(a)) if ident[j] == i}
                for i, c in enumerate(vcp_names)}

    return {
        "fe_mean": dict(zip(fe_names, r(flat["fe"].mean(0)))),
        "fe_sd": dict(zip(fe_names, r(flat["fe"].std(0)))),
        "vcp_mean": dict(zip(vcp_names, r(flat["vcp"].mean(0)))),
        "vcp_sd": dict(zip(vcp_names, r(flat["vcp"].std(0)))),
        "vc_mean": per_component(flat["vc"].mean(0)),
        "vc_sd": per_component(flat["vc"].std(0)),
        "diagnostics": {"max_rhat": rhat, "min_ess": ess,
                        "mc_rel_error_of_fe_vcp_sd": round(
                            1 / np.sqrt(2 * min(ess["fe"], ess["vcp"])), 5),
                        "divergences": int(np.sum(mcmc.get_extra_fields()["diverging"])),
                        "seconds": round(seconds, 1)},
    }


def main(argv=None):
    import argparse
    import fcntl

    ap = argparse.ArgumentParser(description="NUTS reference for grouseticks")
    ap.add_argument("--vcp-p", type=float, action="append",
                    help="prior SD of the log SDs (repeatable; default 1 and 0.5)")
    args = ap.parse_args(argv)
    numpyro.enable_x64()
    for vcp_p in args.vcp_p or (1.0, 0.5):
        fit = run(vcp_p)
        print(vcp_p, fit["diagnostics"], flush=True)
        # merge into the JSON (locked: runs for the two priors may go in parallel)
        with open(OUT.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            out = json.loads(OUT.read_text()) if OUT.exists() else {
                "model": f"{FORMULA} with vc {VC}; Poisson (lme4's grouseticks)",
                "priors": "fe ~ N(0, fe_p^2); vcp (log SD) ~ N(0, vcp_p^2); random effects "
                          "~ N(0, exp(vcp)^2)",
                "method": f"NUTS, {CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up "
                          f"(numpyro {numpyro.__version__}, non-centred, target_accept 0.9); "
                          "tests/reference/nuts_grouseticks.py",
                "fits": {}}
            out["fits"][f"vcp_p={vcp_p},fe_p=2.0"] = fit
            OUT.write_text(json.dumps(out, indent=1) + "\n")
        OUT.with_suffix(".lock").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
