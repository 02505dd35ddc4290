"""Compilation counts of the GLMM fits (issue: time to first result).

One fresh Python process (so that nothing is compiled yet) with the persistent compilation
cache disabled (``BAYESGLMM_CACHE_DIR=0``: every program is an XLA compilation) runs the
scenarios below and reports, per scenario, the number of XLA compilations (JAX's
``/jax/core/compile/backend_compile_duration`` events; op-by-op dispatch outside ``jit``
counts too).  The tests pin those numbers.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks._report import COUNT_COMPILES

SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import bayesglmm as bg
    from bayesglmm import datasets
    from tests.helpers import gen_crossed_logit

    warnings.simplefilter("ignore")
""") + textwrap.dedent(COUNT_COMPILES) + textwrap.dedent("""
    out = {}

    def measure(what, fn):
        c0 = compiles[0]
        result = fn()
        out[what] = compiles[0] - c0
        return result

    long = datasets.expand_binomial(datasets.load("cbpp"), "incidence", "size")
    sub = long.sample(600, random_state=0)
    assert sub.herd.nunique() == long.herd.nunique()
    model = lambda d: bg.BinomialBayesMixedGLM.from_formula(  # noqa: E731
        "y ~ C(period)", {"herd": "0 + C(herd)"}, d)
    m, m600 = model(long), model(sub)
    r = measure("fit_vb", lambda: m.fit_vb())
    measure("fit_vb again", lambda: m.fit_vb(rng=1))
    measure("fit_vb 600 rows", lambda: m600.fit_vb())
    measure("fit_vb results", lambda: (str(r.summary()), r.cov_params(), r.random_effects(),
                                       r.fe_sd))
    r = measure("fit_map", lambda: m.fit_map())
    measure("fit_map 600 rows", lambda: m600.fit_map())
    measure("fit_map results", lambda: (str(r.summary()), r.cov_params(), r.random_effects(),
                                        r.fe_sd))
    measure("fit_map other minim_opts", lambda: m.fit_map(minim_opts={"maxiter": 50}))
    r = measure("fit_laplace", lambda: m.fit_laplace(priors=False))
    measure("fit_laplace 600 rows", lambda: m600.fit_laplace(priors=False))
    measure("fit_laplace results", lambda: (str(r.summary()), r.cov_params(),
                                            r.random_effects()))
    x = np.full(m.k_fep + m.k_vcp + m.k_vc, 0.1)
    measure("logposterior", lambda: (m.logposterior(x), m.logposterior_grad(x)))
    measure("vb_elbo", lambda: (m.vb_elbo(x, x), m.vb_elbo_grad(x, x)))
    measure("kernels 600 rows", lambda: (m600.logposterior(x), m600.vb_elbo(x, x)))
    # the structured path (the dense one is for small problems): two crossed factors
    import bayesglmm.fits.map as map_mod
    map_mod.DENSE_MAX = 0
    y, X, Z, ident = gen_crossed_logit(8, 8, 1, 2)
    crossed = bg.BinomialBayesMixedGLM(y, X, Z, ident)
    measure("fit_map structured", lambda: crossed.fit_map(rng=0))
    measure("fit_vb structured", lambda: crossed.fit_vb(rng=0))
    print(json.dumps(out))
""")


# one fresh process compiling every fit without the cache (~25 s on CI's two cores): run with
# the slow tests (.ci/run runs them after the default suite)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def counts():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(BAYESGLMM_CACHE_DIR="0", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_each_fit_compiles_a_pinned_number_of_programs(counts):
    # fit_vb on this small model: one program, the ELBO's value and gradient (fits.vb's host
    # BFGS).  fit_map (and fit_vb on larger models, "fit_vb structured" below): one program,
    # the Newton iteration (solvers.newton.newton_program: start, warm-up, Newton steps and
    # the step at the optimum in one while_loop, with one copy of the objective's
    # derivatives); fit_map's covariance is computed on the host from the Hessian that last
    # step returns
    assert counts["fit_vb"] == 1
    assert counts["fit_map"] == 1
    # fit_laplace (fits.laplace, driven from the host): the GLM terms for its start, the value
    # J(θ) with the inner mode u*(θ), the gradient and Hessian of J at u*, and the
    # random-effect summaries at the optimum
    assert counts["fit_laplace"] == 4
    # logposterior + its gradient, vb_elbo + its gradient: one program each
    assert counts["logposterior"] == 2
    assert counts["vb_elbo"] == 2
    # structured Newton (crossed factors, several colours): the iteration; fit_map adds the
    # full Hessian from Hessian-vector products, for cov_params() of crossed designs
    assert counts["fit_map structured"] == 2
    assert counts["fit_vb structured"] == 1


def test_new_data_in_the_same_bucket_compiles_nothing(counts):
    """842 and 600 rows of the cbpp binary expansion share the 1024-row bucket, and the 15
    herds the 16-level one (design.buckets)."""
    for what in ("fit_vb 600 rows", "fit_map 600 rows", "fit_laplace 600 rows",
                 "kernels 600 rows"):
        assert counts[what] == 0, what


def test_refits_and_results_compile_nothing(counts):
    """A second fit (another start, other iteration limits) reuses the programs; summary(),
    cov_params(), random_effects() after a fit are numpy."""
    for what in ("fit_vb again", "fit_map other minim_opts", "fit_vb results",
                 "fit_map results", "fit_laplace results"):
        assert counts[what] == 0, what
