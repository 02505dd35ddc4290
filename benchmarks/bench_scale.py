"""Scaling of bayesglmm's fit_map / fit_vb (and, with ``--laplace``, fit_laplace) to millions of
rows and many random effects.

Configurations (each fit of each configuration runs in a fresh subprocess, so that the peak
resident memory (VmHWM, ``_report.peak_rss_mb``) is that fit's alone):

* random-intercept logit and Poisson: n = 1e5 (1e3 groups), 1e6 (1e4 groups), and a larger
  size — 1e7 rows × 1e5 groups if the 1e6 fits finished well under 20 s, else 3e6 × 3e4;
* two crossed factors (logit): n = 1e6, factors of 1e4 and 1e3 levels, ``exog_vc`` the
  hstack of the two indicator matrices, ``ident = [0]*k1 + [1]*k2``.

Reported per fit: steady-state time (median of the calls after a warm-up call), compile time
(first call − steady state), iterations, peak RSS, and the size of the data (X, y and the
CSR arrays of ``exog_vc``).  statsmodels runs only at n = 1e5 / 1e3 groups, each fit in a
subprocess with a 600 s timeout.  The sparse design is never densified.

Usage::

    python benchmarks/bench_scale.py                    # everything, writes the "scale" section
    python benchmarks/bench_scale.py --quick            # n = 1e5 only
    python benchmarks/bench_scale.py --sizes 1e5,1e6    # chosen sizes (groups = n / 100)
    python benchmarks/bench_scale.py --sizes 1e6 --no-crossed --no-statsmodels --no-write
    python benchmarks/bench_scale.py --laplace          # fit_laplace only: "scale-laplace"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import (backend_suffix, device_peak_mb, peak_rss_mb, table,  # noqa: E402
                                write_section)

FE = np.array([-0.5, 1.0, -1.0])
FE_POISSON = np.array([0.2, 0.3, -0.3])
SD_RE = 0.8
SEED = 20240602
SM_TIMEOUT = 600


# ---------------------------------------------------------------------------- data
def simulate(family: str, n: int, levels: list[int], seed: int = SEED):
    """X = [1, x1, x2]; one random intercept per factor in ``levels``; CSR design built
    from (row, code) pairs — never dense."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    fe = FE if family == "logit" else FE_POISSON
    eta = X @ fe
    mats, ident = [], []
    for t, k in enumerate(levels):
        g = rng.integers(0, k, size=n)
        eta += rng.normal(0.0, SD_RE if t == 0 else 0.5, size=k)[g]
        mats.append(sp.csr_array((np.ones(n), (np.arange(n), g)), shape=(n, k)))
        ident += [t] * k
        del g
    if family == "logit":
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    else:
        y = rng.poisson(np.exp(eta)).astype(np.float64)
    del eta
    Z = mats[0] if len(mats) == 1 else sp.hstack(mats, format="csr")
    return y, X, sp.csr_array(Z), np.asarray(ident, dtype=np.int64)


def data_mb(y, X, Z) -> float:
    return (y.nbytes + X.nbytes + Z.data.nbytes + Z.indices.nbytes + Z.indptr.nbytes) / 2**20


def _maxrss_mb() -> float:
    return peak_rss_mb()


# ---------------------------------------------------------------------------- workers
def worker(spec: dict) -> dict:
    """One fit of one configuration (run in a fresh process). Prints a JSON line."""
    family, n, levels, method = spec["family"], spec["n"], spec["levels"], spec["method"]
    lib, repeat = spec["lib"], spec["repeat"]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    y, X, Z, ident = simulate(family, n, levels)
    out = dict(spec, data_mb=data_mb(y, X, Z), simulate_s=time.perf_counter() - t0,
               rss_after_data_mb=_maxrss_mb())
    if lib == "statsmodels":
        from statsmodels.genmod import bayes_mixed_glm as smb

        cls = smb.BinomialBayesMixedGLM if family == "logit" else smb.PoissonBayesMixedGLM
        model = cls(y, X, sp.csr_matrix(Z), ident)
        t = time.perf_counter()
        r = getattr(model, method)(rng=0)
        out.update(time_s=time.perf_counter() - t, nit=int(r.optim_retvals.nit),
                   success=bool(r.optim_retvals.success), fe=[float(v) for v in r.fe_mean])
    else:
        import bayesglmm

        cls = (bayesglmm.BinomialBayesMixedGLM if family == "logit"
               else bayesglmm.PoissonBayesMixedGLM)
        model = cls(y, X, Z, ident)
        out["rss_after_model_mb"] = _maxrss_mb()
        if method.startswith("fit_laplace"):  # no rng: the same deterministic fit each call
            priors = method.endswith("priors=True)")
            fit = lambda rng: model.fit_laplace(priors=priors)  # noqa: E731
        else:
            fit = getattr(model, method)
        t = time.perf_counter()
        r = fit(rng=0)
        first = time.perf_counter() - t
        times, nits, ok = [], [int(r.optim_retvals.nit)], [bool(r.optim_retvals.success)]
        for i in range(repeat):
            t = time.perf_counter()
            r = fit(rng=np.random.default_rng(1000 + i))
            times.append(time.perf_counter() - t)
            nits.append(int(r.optim_retvals.nit))
            ok.append(bool(r.optim_retvals.success))
        steady = float(np.median(times)) if times else first
        out.update(first_s=first, time_s=steady, times=times, compile_s=max(first - steady, 0.0),
                   nits=nits, success=all(ok), grad_norm=float(r.optim_retvals.grad_norm),
                   fe=[float(v) for v in r.fe_mean], vcp=[float(v) for v in r.vcp_mean])
    out["peak_rss_mb"] = _maxrss_mb()
    out["load"] = max(load0, os.getloadavg()[0])
    if lib == "ours":
        from bayesglmm._precision import resolve_dtype

        out["dtype"] = resolve_dtype().name
        out["device_peak_mb"] = device_peak_mb()
        out["backend_suffix"] = backend_suffix()
    return out


def run_worker(spec: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(spec, timeout=True, wall_s=time.perf_counter() - t0)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout)[-2000:]
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        return dict(spec, error=f"exit {p.returncode}: {last}",
                    stderr=tail, wall_s=time.perf_counter() - t0)
    res = json.loads(lines[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------- driver
def label(levels):
    return " × ".join(f"{k:,}" for k in levels)


def design_name(family, levels):
    return f"{family}, " + ("random intercept" if len(levels) == 1 else f"{len(levels)} crossed factors")


def compile_estimate(r: dict) -> float:
    """Warm-up call − its run time, the latter estimated as the steady-state time per
    iteration × the warm-up's iterations (the warm-up uses another rng, and the iteration
    count varies with the start)."""
    per_it = np.median([t / max(k, 1) for t, k in zip(r["times"], r["nits"][1:])]) \
        if r["times"] else r["time_s"] / max(r["nits"][0], 1)
    return max(r["first_s"] - per_it * r["nits"][0], 0.0)


def row_of(r: dict) -> dict:
    row = {"design": design_name(r["family"], r["levels"]), "n": f"{r['n']:.0e}".replace("+0", ""),
           "levels": label(r["levels"]), "fit": r["method"], "lib": r["lib"]}
    if r.get("timeout"):
        row["steady (s)"] = f"> {SM_TIMEOUT} s"
        return row
    if r.get("error"):
        row["steady (s)"] = "error"
        row["notes"] = r["error"][:80]
        return row
    row["steady (s)"] = r["time_s"]
    if r["lib"] == "ours":
        row["compile (s)"] = compile_estimate(r)
        row["nit"] = "/".join(str(x) for x in sorted(set(r["nits"])))
        row["repeats"] = len(r["times"])
    else:
        row["nit"] = str(r["nit"]) + ("" if r["success"] else " (not conv.)")
    row["peak RSS (MB)"] = f"{r['peak_rss_mb']:,.0f}"
    row.update(_device_peak(r))
    row["data (MB)"] = f"{r['data_mb']:,.0f}"
    row["load"] = f"{r['load']:.1f}"
    if not r.get("success", True):
        row["notes"] = "did not converge"
    return row


SM_NOTE = (f"statsmodels ran at n = 1e5 / 1e3 groups only, one call per fit in a subprocess "
           f"with a {SM_TIMEOUT} s timeout (its `fit_map` builds a dense finite-difference "
           "Hessian with one gradient per parameter, and its `fit_vb` takes minutes already at "
           "1e5); larger sizes were skipped.")


def report(results: list[dict], total: float | None, note_large: str = "", write: bool = True):
    """Markdown table + notes from the per-fit result dicts; optionally write the section."""
    rows = [row_of(r) for r in results]
    # speed-ups against statsmodels where both ran
    for r, row in zip(results, rows):
        if r["lib"] == "ours" and "time_s" in r:
            sm = [s for s in results if s["lib"] == "statsmodels" and s["family"] == r["family"]
                  and s["n"] == r["n"] and s["levels"] == r["levels"]
                  and s["method"] == r["method"]]
            if sm and "time_s" in sm[0]:
                row["vs statsmodels"] = f"{sm[0]['time_s'] / r['time_s']:.0f}×"
            elif sm and sm[0].get("timeout"):
                row["vs statsmodels"] = f"> {SM_TIMEOUT / r['time_s']:.0f}×"

    cols = ["design", "n", "levels", "fit", "lib", "steady (s)", "compile (s)", "nit",
            "repeats", "peak RSS (MB)", "device peak (MB)", "data (MB)", "vs statsmodels",
            "load", "notes"]
    md = table(rows, _present(cols, rows))
    print("\n" + md)
    if total is not None:
        print(f"\ntotal wall time {total:.0f} s")

    suffix = _suffix(results)
    notes = ["### Scaling: random intercepts and crossed factors" + _on_device(suffix, results),
             "",
             "X = [1, x1, x2]; groups = n / 100 for the random-intercept designs (logit: fe = "
             "(−0.5, 1, −1), Poisson: fe = (0.2, 0.3, −0.3), intercept SD 0.8); the crossed "
             "design adds a second factor (SD 0.5). `exog_vc` is a scipy CSR indicator matrix "
             "built from (row, code) pairs, never dense. Each fit runs in a fresh subprocess: "
             "one warm-up call (compile), then `repeats` timed calls with fresh `rng`s; "
             "steady = their median; compile = warm-up − (steady time per iteration × the "
             "warm-up's iterations), since the iteration count varies with the start. "
             "Peak RSS is that process's "
             "peak resident memory (VmHWM; including the Python/JAX runtime, the simulated data and "
             "statsmodels/scipy copies); data = X + y + CSR arrays of `exog_vc`. `load` is the "
             f"1-minute load average (max of start/end of the fit; {os.cpu_count()} cores, the "
             "benchmark itself accounts for 1–2): well above 2, other processes were "
             "competing for the CPU and the times are inflated.", "", md, ""]
    tgt = [r for r in results if r["lib"] == "ours" and r["n"] == 1_000_000
           and len(r["levels"]) == 1 and "time_s" in r]
    if tgt:
        parts = []
        for r in tgt:
            lim = 10 if r["method"] == "fit_map" else 20
            parts.append(f"{r['family']} `{r['method']}` {r['time_s']:.3g} s "
                         f"(target ≤ {lim} s: {'met' if r['time_s'] <= lim else 'not met'})")
        notes.append("Targets at 1e6 rows / 1e4 groups: " + "; ".join(parts) + ".")
    if note_large:
        notes.append(note_large)
    if any(r["lib"] == "statsmodels" for r in results):
        notes.append(SM_NOTE)
    else:
        notes.append("statsmodels was not run in this invocation (see the \"glmm\" section for "
                     "statsmodels at n = 1e5 / 1e3 groups, logit).")
    if total is not None:
        notes.append(f"\nTotal benchmark wall time {total:.0f} s.")
    if write:
        write_section("scale" + suffix, "\n".join(notes))
        print(f"wrote section 'scale{suffix}' of benchmarks/RESULTS.md")


def _device_peak(r: dict) -> dict:
    """The "device peak (MB)" cell of a result, where it was measured (an accelerator)."""
    mb = r.get("device_peak_mb")
    return {} if mb is None else {"device peak (MB)": f"{mb:,.0f}"}


def _present(cols: list[str], rows: list[dict]) -> list[str]:
    """``cols`` less "device peak (MB)" where no row has it (a CPU run)."""
    return [c for c in cols if c != "device peak (MB)" or any(c in row for row in rows)]


def _suffix(results: list[dict]) -> str:
    """The section's backend suffix: the workers' (also when rebuilt ``--from-log`` on another
    machine), else this process's."""
    found = {r["backend_suffix"] for r in results if "backend_suffix" in r}
    return found.pop() if len(found) == 1 else backend_suffix()


def _on_device(suffix: str, results: list[dict]) -> str:
    """The heading's note of an accelerator run: its backend and the fits' dtype (float32 by
    default off CPU); device peak = the accelerator's peak allocation."""
    if not suffix:
        return ""
    dtypes = sorted({r["dtype"] for r in results if r.get("dtype")})
    return f" — on {suffix[1:]} ({', '.join(dtypes) or 'default dtype'})"


LAPLACE = ("fit_laplace(priors=False)", "fit_laplace(priors=True)")
LAPLACE_GOALS = {100_000: (None, 1.0), 1_000_000: (6.0, 3.0)}  # n: (first call, warm), issue 9


def report_laplace(results: list[dict], write: bool = True):
    """The ``scale-laplace`` section: fit_laplace's first call and steady state against the
    time-to-first-result issue's goals."""
    rows = []
    for r in results:
        first_goal, warm_goal = LAPLACE_GOALS.get(r["n"], (None, None))
        row = {"n": f"{r['n']:.0e}".replace("+0", ""), "groups": label(r["levels"]),
               "fit": f"`{r['method']}`"}
        if "time_s" not in r:
            row["notes"] = r.get("error", "timeout")[:80]
            rows.append(row)
            continue
        met = [f"first ≤ {first_goal:g} s: {'met' if r['first_s'] <= first_goal else 'not met'}"
               if first_goal else "",
               f"warm ≤ {warm_goal:g} s: {'met' if r['time_s'] <= warm_goal else 'not met'}"
               if warm_goal else ""]
        row.update({"first call (s)": f"{r['first_s']:.2f}", "warm (s)": f"{r['time_s']:.2f}",
                    "nit": "/".join(str(x) for x in sorted(set(r["nits"]))),
                    "peak RSS (MB)": f"{r['peak_rss_mb']:,.0f}", "load": f"{r['load']:.1f}",
                    "goals (issue 9)": "; ".join(m for m in met if m), **_device_peak(r)})
        rows.append(row)
    cols = ["n", "groups", "fit", "first call (s)", "warm (s)", "nit", "peak RSS (MB)",
            "device peak (MB)", "load", "goals (issue 9)", "notes"]
    md = table(rows, _present(cols, rows))
    print("\n" + md)
    suffix = _suffix(results)
    text = "\n".join([
        "### Scaling: the marginal Laplace fit (`bench_scale.py --laplace`)"
        + _on_device(suffix, results), "",
        "Logit random intercept as above (groups = n / 100), `fit_laplace` with and without "
        "priors, each configuration in a fresh process without the persistent cache: *first "
        "call* includes tracing and compilation, *warm* is the median of the calls after it.",
        "", md])
    if write:
        write_section("scale-laplace" + suffix, text)
        print(f"wrote section 'scale-laplace{suffix}' of benchmarks/RESULTS.md")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="n = 1e5 only (with statsmodels)")
    ap.add_argument("--sizes", default=None,
                    help="comma-separated n for the random-intercept designs, groups = n/100 "
                         "(default: 1e5,1e6 then 1e7 or 3e6 depending on the 1e6 times)")
    ap.add_argument("--families", default="logit,poisson")
    ap.add_argument("--crossed", default="1e6:1e4,1e3",
                    help="crossed design 'n:k1,k2' ('' to skip; default 1e6:1e4,1e3)")
    ap.add_argument("--no-crossed", action="store_true")
    ap.add_argument("--no-statsmodels", action="store_true")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed calls after the warm-up (default 3 up to n = 1e6, else 1)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--laplace", action="store_true",
                    help="only fit_laplace (logit, 1e5 and 1e6 rows) into its own section")
    ap.add_argument("--from-log", metavar="FILE",
                    help="rebuild the table from the JSON lines this script printed earlier")
    args = ap.parse_args(argv)

    if args.from_log:
        with open(args.from_log) as fh:
            results = [json.loads(ln) for ln in fh if ln.startswith("{")]
        report(results, None, write=not args.no_write)
        return

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    families = [f for f in args.families.split(",") if f]
    auto_large = args.sizes is None and not args.quick
    if args.quick:
        sizes = [100_000]
    elif args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    else:
        sizes = [100_000, 1_000_000]
    crossed = None
    if args.crossed and not args.no_crossed and not args.quick:
        n_c, lv = args.crossed.split(":")
        crossed = (int(float(n_c)), [int(float(k)) for k in lv.split(",")])

    def repeat_for(n):
        return args.repeat if args.repeat is not None else (3 if n <= 1_000_000 else 1)

    t_start = time.perf_counter()
    results = []

    def run_ours(family, n, levels, methods=("fit_map", "fit_vb")):
        for method in methods:
            spec = dict(family=family, n=n, levels=levels, method=method, lib="ours",
                        repeat=repeat_for(n))
            r = run_worker(spec, timeout=None)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "stderr"}), flush=True)
            if r.get("error"):
                print(r.get("stderr", ""), file=sys.stderr)

    if args.laplace:
        os.environ["BAYESGLMM_CACHE_DIR"] = "0"  # the first call compiles (workers inherit)
        for n in (100_000, 1_000_000):
            run_ours("logit", n, [n // 100], LAPLACE)
        report_laplace(results, write=not args.no_write)
        return

    for n in sizes:
        for family in families:
            run_ours(family, n, [max(n // 100, 1)])

    note_large = ""
    if auto_large:
        t1e6 = [r["time_s"] for r in results if r["n"] == 1_000_000 and "time_s" in r]
        worst = max(t1e6) if t1e6 else float("inf")
        if worst < 10:
            n_big = 10_000_000
            note_large = (f"The slowest 1e6 fit took {worst:.3g} s (< 10 s), so the large "
                          "case is 1e7 rows × 1e5 groups.")
        else:
            n_big = 3_000_000
            note_large = (f"The slowest 1e6 fit took {worst:.1f} s (not well under 20 s), so "
                          "the large case is 3e6 rows × 3e4 groups rather than 1e7 × 1e5.")
        print(note_large, flush=True)
        for family in families:
            run_ours(family, n_big, [n_big // 100])

    if crossed:
        run_ours("logit", crossed[0], crossed[1])

    if not args.no_statsmodels and 100_000 in sizes:
        for family in families:
            for method in ("fit_map", "fit_vb"):
                spec = dict(family=family, n=100_000, levels=[1000], method=method,
                            lib="statsmodels", repeat=0)
                r = run_worker(spec, timeout=SM_TIMEOUT)
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "stderr"}), flush=True)

    total = time.perf_counter() - t_start
    report(results, total, note_large, write=not args.no_write)


if __name__ == "__main__":
    main()
