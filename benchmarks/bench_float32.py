"""float32 against float64 for every fit, on whatever device JAX uses by default.

On accelerators bayesglmm computes in float32 unless asked (``dtype=None``); this checks that
each fit still converges there and how far its estimates are from the float64 fit of the same
model on the same device.  It runs unchanged on a CPU (where float64 is the default).

Per case and fit: converged (float32), Newton iterations (float32 / float64), the largest
|difference| of the fixed effects and of the variance parameters (float32 − float64, in units
of the float64 posterior SD / standard error) and the steady-state time of each (median of
``--repeat`` calls after the first).

Usage::

    python benchmarks/bench_float32.py              # prints the table and writes a section of
                                                    # benchmarks/RESULTS.md named after the device
    python benchmarks/bench_float32.py --no-write
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FITS = [("fit_map", {}), ("fit_vb", {}), ("fit_laplace", {"priors": False}),
        ("fit_laplace", {"priors": True}), ("fit_laplace", {"priors": True, "integrate": True})]


def glmm_cases():
    from bayesglmm import (BinomialBayesMixedGLM, NegativeBinomialBayesMixedGLM,
                           PoissonBayesMixedGLM, datasets)

    cbpp = datasets.load("cbpp")
    gt = datasets.load("grouseticks")
    vc2 = {"BROOD": "0 + C(BROOD)", "LOCATION": "0 + C(LOCATION)"}
    return {
        "cbpp (binomial)": lambda dt: BinomialBayesMixedGLM.from_formula(
            "incidence ~ C(period)", {"herd": "0 + C(herd)"}, cbpp, n_trials="size", dtype=dt),
        "grouseticks (Poisson, 3 factors)": lambda dt: PoissonBayesMixedGLM.from_formula(
            "TICKS ~ YEAR + cHEIGHT", {**vc2, "INDEX": "0 + C(INDEX)"}, gt, dtype=dt),
        "grouseticks (NB2)": lambda dt: NegativeBinomialBayesMixedGLM.from_formula(
            "TICKS ~ YEAR + cHEIGHT", vc2, gt, dtype=dt),
    }


def _timed(f, repeat):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = f()
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = f()
            ts.append(time.perf_counter() - t0)
    return r, statistics.median(ts) if ts else float("nan")


def glmm_rows(repeat):
    rows = []
    for case, build in glmm_cases().items():
        m32, m64 = build("float32"), build("float64")
        for meth, kw in FITS:
            label = f"{meth}({', '.join(f'{k}={v}' for k, v in kw.items())})"
            if meth == "fit_map" and "NB2" in case:
                continue  # the joint mode collapses the SDs (docs/negative_binomial.md)
            try:
                r32, t32 = _timed(lambda m=m32, f=meth, k=kw: getattr(m, f)(**k), repeat)
                r64, t64 = _timed(lambda m=m64, f=meth, k=kw: getattr(m, f)(**k), repeat)
            except ValueError as err:  # e.g. integrate on a singular fit
                rows.append((case, label, f"refused: {err}"[:60], "", "", "", "", ""))
                continue
            sd = lambda a: np.where(np.asarray(a) > 0, np.asarray(a), np.nan)  # noqa: E731
            dfe = np.nanmax(np.abs(r32.fe_mean - r64.fe_mean) / sd(r64.fe_sd))
            dvp = np.nanmax(np.abs(r32.vcp_mean - r64.vcp_mean) / sd(r64.vcp_sd))
            it = lambda r: getattr(r.optim_retvals, "nit", "")  # noqa: E731
            rows.append((case, label, str(bool(r32.converged)), f"{it(r32)} / {it(r64)}",
                         f"{dfe:.2g}", f"{dvp:.2g}", f"{t32 * 1e3:.1f}", f"{t64 * 1e3:.1f}"))
            print(rows[-1], flush=True)
    return rows


def lmm_rows(repeat):
    from bayesglmm import datasets, mixedlm

    ss = datasets.load("sleepstudy")
    rows = []
    for reml in (True, False):
        fits = {}
        for dt in ("float32", "float64"):
            m = mixedlm("Reaction ~ Days", ss, groups="Subject", re_formula="~Days", dtype=dt)
            fits[dt] = _timed(lambda m=m, r=reml: m.fit(reml=r), repeat)
        (r32, t32), (r64, t64) = fits["float32"], fits["float64"]
        dfe = np.max(np.abs(np.asarray(r32.fe_params) - np.asarray(r64.fe_params))
                     / np.asarray(r64.bse_fe))
        dvc = np.max(np.abs(np.asarray(r32.cov_re) - np.asarray(r64.cov_re))
                     / np.abs(np.asarray(r64.cov_re)).max())
        rows.append(("sleepstudy (LMM)", "REML" if reml else "ML", str(bool(r32.converged)),
                     "", f"{dfe:.2g}", f"{dvc:.2g} (rel.)", f"{t32 * 1e3:.1f}",
                     f"{t64 * 1e3:.1f}"))
        print(rows[-1], flush=True)
    return rows


def render(rows, device: str) -> str:
    head = ("| data | fit | converged (f32) | iterations f32 / f64 | max Δfe (SDs) | "
            "max Δvcp (SDs) | f32 ms | f64 ms |")
    lines = [f"<!-- BEGIN float32-{device} -->",
             f"## float32 against float64 on {device} (`benchmarks/bench_float32.py`)", "",
             "Steady state (median after a first, compiling call); differences of the "
             "float32 estimates from the float64 fit in float64 posterior SDs (standard "
             "errors for ML/REML).", "", head, "|---" * 8 + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [f"<!-- END float32-{device} -->", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import jax

    dev = jax.devices()[0]
    kind = str(getattr(dev, "device_kind", ""))
    device = dev.platform if kind.lower() in ("", dev.platform) else f"{dev.platform} ({kind})"
    rows = glmm_rows(args.repeat) + lmm_rows(args.repeat)
    text = render(rows, dev.platform)
    text = text.replace(f"on {dev.platform} (", f"on {device} (", 1)
    print(text)
    if not args.no_write:
        path = ROOT / "benchmarks" / "RESULTS.md"
        s = path.read_text()
        b, e = f"<!-- BEGIN float32-{dev.platform} -->", f"<!-- END float32-{dev.platform} -->"
        if b in s:
            s = s[:s.index(b)] + text.rstrip("\n") + s[s.index(e) + len(e):]
        else:
            s = s.rstrip("\n") + "\n\n" + text
        path.write_text(s)


if __name__ == "__main__":
    main()
