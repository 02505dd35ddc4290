"""JAX's LAPACK initialised without importing scipy.linalg (bayesglmm/_lapack.py): a fit in a
fresh process leaves scipy.linalg unimported, gives the numbers of a process where scipy.linalg
came first, and scipy.linalg imports and works normally afterwards; OpenBLAS still runs
single-threaded in LMM fits (linalg/_blas.py)."""

import json
import subprocess
import sys
import textwrap

FIT = textwrap.dedent("""
    import json, sys
    {first}
    import numpy as np
    import bayesglmm as bg
    from bayesglmm import _lapack, datasets
    from bayesglmm.linalg import _blas

    glmm = bg.BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {{"herd": "0 + C(herd)"}}, datasets.load("cbpp"),
        n_trials="size").fit_laplace(priors=False)
    lmm = bg.mixedlm("Reaction ~ Days", datasets.load("sleepstudy"), groups="Subject",
                     re_formula="~Days").fit()
    from jaxlib import lapack
    out = {{"hook": hasattr(getattr(lapack, "_lapack", None), "initialize"),
            "scipy_linalg_during_fits": "scipy.linalg" in sys.modules,
            "preloaded": _lapack.loaded(), "openblas_handles": len(_blas._openblas_handles()),
            "glmm": np.asarray(glmm.params).tolist(), "lmm": np.asarray(lmm.params).tolist(),
            "glmm_sd": np.asarray(glmm.fe_sd).tolist()}}
    import scipy.linalg
    from scipy.linalg import cython_blas
    out["after"] = float(scipy.linalg.cholesky(np.array([[4.0, 2.0], [2.0, 5.0]]))[1, 1])
    out["capi"] = len(cython_blas.__pyx_capi__) > 0
    print(json.dumps(out))
""")


def _run(first: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FIT.format(first=first)], capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fits_run_without_scipy_linalg_and_agree_with_it():
    lean = _run("")
    usual = _run("import scipy.linalg")
    if lean["hook"]:  # jaxlib's initialisation as bayesglmm._lapack knows it (jaxlib 0.10)
        assert lean["preloaded"] and not lean["scipy_linalg_during_fits"]
    else:  # another jaxlib: nothing preloaded, JAX's own route, the same numbers
        assert not lean["preloaded"]
    assert not usual["preloaded"]  # scipy.linalg already there: nothing to do
    for key in ("glmm", "glmm_sd", "lmm"):
        assert lean[key] == usual[key]  # the same LAPACK: the same numbers, bit for bit
    assert lean["after"] == usual["after"] == 2.0
    assert lean["capi"] and usual["capi"]
    if sys.platform.startswith("linux"):  # OpenBLAS found in both (set single-threaded)
        assert lean["openblas_handles"] >= 1 and usual["openblas_handles"] >= 1
