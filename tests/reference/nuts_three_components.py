"""Exact posteriors (NUTS) of two simulated Poisson GLMMs with three variance components: the
reference that tests/fits/test_integrate.py checks the default node design's choice against
(``integrate=True`` leaves the central composite design for the lattice when its misfit
exceeds ``fits.integrate.CCD_MISFIT``).

Data (``three_components.csv``, written by ``--simulate``; 400 rows a case)::

    y_i ~ Poisson(exp(0.5 + 0.3 x_i + a[A_i] + b[B_i] + o_i)),  x ~ N(0, 1)
    A: 30 levels, B: 10 levels, O: one level per row (an observation-level effect)
    "nested":  B = A mod 10, SDs (a, b, o) = (0.8, 0.2, 0.4)  (the CCD's misfit: 0.47)
    "crossed": B independent of A, SDs (0.4, 0.05, 0.5)       (the CCD's misfit: 0.39)

Model: ``PoissonBayesMixedGLM.from_formula("y ~ x", {"A": "0 + C(A)", "B": "0 + C(B)",
"O": "0 + C(O)"}, vcp_p=1)`` — fe ~ N(0, 2²), log SDs ~ N(0, 1) — sampled non-centred with
nuts_grouseticks.py's numpyro model (the same likelihood and priors, written independently of
bayesglmm).  numpyro is a tool of this script only (``pip install numpyro``).  From the
repository root::

    python tests/reference/nuts_three_components.py --simulate   # the CSV (numpy's PCG64)
    python tests/reference/nuts_three_components.py              # the JSON (~5 CPU minutes)

4 chains × ``DRAWS`` draws after ``WARMUP`` warm-up steps, target acceptance 0.9; fails
unless every fe and vcp split R-hat is ≤ 1.01.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
CSV = HERE / "three_components.csv"
OUT = HERE / "posterior_nuts_three_components.json"
WARMUP, DRAWS, CHAINS = 1500, 10000, 4
FORMULA = "y ~ x"
VC = {"A": "0 + C(A)", "B": "0 + C(B)", "O": "0 + C(O)"}
CASES = {"nested": (4, (0.8, 0.2, 0.4), True), "crossed": (5, (0.4, 0.05, 0.5), False)}


def simulate(seed: int, sds, nested: bool, n: int = 400, ka: int = 30, kb: int = 10):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, ka, n)
    b = a % kb if nested else rng.integers(0, kb, n)
    x = rng.normal(size=n)
    eta = (0.5 + 0.3 * x + sds[0] * rng.normal(size=ka)[a] + sds[1] * rng.normal(size=kb)[b]
           + sds[2] * rng.normal(size=n))
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "A": a, "B": b,
                         "O": np.arange(n)})


def load(case: str) -> pd.DataFrame:
    """The rows of ``case`` ("nested" or "crossed") from the committed CSV."""
    df = pd.read_csv(CSV)
    return df[df["case"] == case].drop(columns="case").reset_index(drop=True)


def run(case: str, seed: int = 0) -> dict:
    import jax
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
    from numpyro.infer import MCMC, NUTS

    import bayesglmm as bg

    sys.path.insert(0, str(HERE))
    from nuts_grouseticks import model

    m = bg.PoissonBayesMixedGLM.from_formula(FORMULA, VC, load(case), vcp_p=1.0)
    y, X = np.asarray(m.endog, float), np.asarray(m.exog, float)
    Z, ident = m.exog_vc.toarray(), np.asarray(m.ident)
    mcmc = MCMC(NUTS(model, target_accept_prob=0.9), num_warmup=WARMUP, num_samples=DRAWS,
                num_chains=CHAINS, chain_method="sequential", progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), y, X, Z, ident, 2.0, 1.0)
    seconds = time.perf_counter() - t0
    s = mcmc.get_samples(group_by_chain=True)
    rhat = {k: float(np.max(split_gelman_rubin(np.asarray(s[k])))) for k in ("fe", "vcp")}
    ess = {k: float(np.min(effective_sample_size(np.asarray(s[k])))) for k in ("fe", "vcp")}
    if max(rhat.values()) > 1.01:
        sys.exit(f"R-hat above 1.01 for {case}: {rhat}")
    flat = {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in s.items()}
    r = lambda a: [round(float(x), 5) for x in a]  # noqa: E731
    return {"fe_mean": dict(zip(m.fep_names, r(flat["fe"].mean(0)))),
            "fe_sd": dict(zip(m.fep_names, r(flat["fe"].std(0)))),
            "vcp_mean": dict(zip(m.vcp_names, r(flat["vcp"].mean(0)))),
            "vcp_sd": dict(zip(m.vcp_names, r(flat["vcp"].std(0)))),
            "diagnostics": {"max_rhat": rhat, "min_ess": ess,
                            "mc_rel_error_of_sd": round(1 / np.sqrt(2 * min(ess.values())), 5),
                            "divergences": int(np.sum(mcmc.get_extra_fields()["diverging"])),
                            "seconds": round(seconds, 1)}}


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="NUTS references for two simulated models")
    ap.add_argument("--simulate", action="store_true", help="write the CSV and stop")
    args = ap.parse_args(argv)
    if args.simulate:
        frames = [simulate(seed, sds, nested).assign(case=case)
                  for case, (seed, sds, nested) in CASES.items()]
        pd.concat(frames).to_csv(CSV, index=False, float_format="%.10g")
        return
    import numpyro

    numpyro.enable_x64()
    out = {"model": f"Poisson {FORMULA} with vc {VC}; vcp_p = 1, fe_p = 2; data "
                    f"{CSV.name} (tests/reference/nuts_three_components.py)",
           "method": f"NUTS, {CHAINS} chains x {DRAWS} draws after {WARMUP} warm-up "
                     f"(numpyro {numpyro.__version__}, non-centred, target_accept 0.9)",
           "fits": {}}
    for case in CASES:
        out["fits"][case] = run(case)
        print(case, out["fits"][case]["diagnostics"], flush=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
