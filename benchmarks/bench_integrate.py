"""Cost of the integrated fit: ``fit_laplace(priors=True, integrate=True)`` against
``fit_laplace(priors=True)`` on the same model, in time and peak memory.

Cases (``CASES``):

* ``cbpp`` — binomial counts, one random intercept (15 herds): 1 variance parameter;
* ``grouseticks`` — Poisson, random intercepts BROOD × INDEX × LOCATION (403 rows; INDEX is
  observation-level): 3 variance parameters;
* ``crossed-binary`` — simulated in the shape of lme4's VerbAgg (not bundled: GPL):
  7,584 0/1 rows, 316 subjects × 24 items fully crossed, fixed effects Anger (subject-level,
  continuous), Gender (subject-level), btype (3 levels) and situ (2 levels, item-level);
  2 variance parameters;
* ``four-factors`` — simulated logit, 2,000 rows, four crossed factors of 8 levels each:
  4 variance parameters.

Each fit runs in a fresh subprocess (no persistent compilation cache), so that its peak RSS
is that fit's peak and the first call's time includes compilation, as a new session's first
fit would: reported are the first call ("cold") and the median of two further calls
("steady").  ``integrate=True`` includes the mode fit it starts from.

Usage::

    python benchmarks/bench_integrate.py             # all cases, writes RESULTS.md
    python benchmarks/bench_integrate.py --cases cbpp,four-factors --no-write
    python benchmarks/bench_integrate.py --worker grouseticks integrate   # one fit, JSON
    python benchmarks/bench_integrate.py --accuracy  # every fit against NUTS, cbpp and
                                                     # grouseticks: RESULTS.md and the
                                                     # table of docs/which_fit.md
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import peak_rss_mb  # noqa: E402

OUT = Path(__file__).with_name("RESULTS.md")
SEED = 20261122


def crossed_binary(n_id: int = 316, n_item: int = 24, seed: int = SEED):
    """A VerbAgg-shaped crossed binary data set (pandas DataFrame), n_id × n_item rows."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1.3, n_id)  # subject effects (VerbAgg: SD ≈ 1.34)
    b = rng.normal(0, 0.5, n_item)  # item effects (VerbAgg: SD ≈ 0.50)
    anger = rng.integers(11, 40, n_id).astype(float)
    gender = rng.choice(["F", "M"], n_id, p=[0.77, 0.23])
    btype = np.tile(["curse", "scold", "shout"], n_item // 3 + 1)[:n_item]
    situ = np.where(np.arange(n_item) < n_item // 2, "other", "self")
    i, j = (x.ravel() for x in np.meshgrid(np.arange(n_id), np.arange(n_item), indexing="ij"))
    eta = (0.2 + 0.06 * (anger[i] - 20) + 0.3 * (gender[i] == "M")
           - 1.0 * (btype[j] == "scold") - 2.0 * (btype[j] == "shout")
           - 1.0 * (situ[j] == "self") + a[i] + b[j])
    y = (rng.random(i.size) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"r2": y, "Anger": anger[i], "Gender": gender[i], "btype": btype[j],
                         "situ": situ[j], "id": i, "item": j})


def four_factors(n: int = 2000, levels: int = 8, seed: int = SEED):
    """Simulated logit data with four crossed factors a, b, c, d of ``levels`` levels."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = rng.integers(0, levels, size=(n, 4))
    eff = rng.normal(0, 0.7, size=(4, levels))
    x = rng.normal(size=n)
    eta = 0.3 + 0.5 * x + sum(eff[k][g[:, k]] for k in range(4))
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return pd.DataFrame({"y": y, "x": x, **{c: g[:, k] for k, c in enumerate("abcd")}})


def model(case: str, vcp_p: float = 1.0):
    """The model of ``case`` (a BayesMixedGLM; fe_p = 2)."""
    import bayesglmm as bg
    from bayesglmm import datasets

    if case == "cbpp":
        return bg.BinomialBayesMixedGLM.from_formula(
            "incidence ~ C(period)", {"herd": "0 + C(herd)"}, datasets.load("cbpp"),
            n_trials="size", vcp_p=vcp_p)
    if case == "grouseticks":
        return bg.PoissonBayesMixedGLM.from_formula(
            "TICKS ~ YEAR + cHEIGHT",
            {"BROOD": "0 + C(BROOD)", "INDEX": "0 + C(INDEX)", "LOCATION": "0 + C(LOCATION)"},
            datasets.load("grouseticks"), vcp_p=vcp_p)
    if case == "crossed-binary":
        return bg.BinomialBayesMixedGLM.from_formula(
            "r2 ~ Anger + Gender + btype + situ", {"id": "0 + C(id)", "item": "0 + C(item)"},
            crossed_binary(), vcp_p=vcp_p)
    if case == "four-factors":
        return bg.BinomialBayesMixedGLM.from_formula(
            "y ~ x", {c: f"0 + C({c})" for c in "abcd"}, four_factors(), vcp_p=vcp_p)
    raise ValueError(f"unknown case {case!r}")


CASES = ["cbpp", "grouseticks", "crossed-binary", "four-factors"]


def worker(case: str, which: str, repeats: int = 5) -> dict:
    """One fit in this process: ``which`` is ``"priors"``, ``"integrate"`` (the default
    design) or ``"ccd"`` (``integrate="ccd"``)."""
    import warnings

    m = model(case)
    kw = {"priors": True, "integrate": {"priors": False, "integrate": True, "ccd": "ccd"}[which]}
    times, cpu = [], []
    for _ in range(1 + repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = m.fit_laplace(**kw)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # all threads: robust to other jobs' load
    fit = r.marginal
    integ = fit.integrated
    return {"case": case, "fit": which, "rows": int(m.nobs), "k_fep": int(m.k_fep),
            "k_vcp": int(m.k_vcp), "k_vc": int(m.k_vc), "cold_s": times[0],
            "cold_cpu_s": cpu[0],
            "steady_s": float(np.median(times[1:])) if repeats else float("nan"),
            "steady_cpu_s": float(np.median(cpu[1:])) if repeats else float("nan"),
            "nodes": 0 if integ is None else int(len(integ.weights)),
            "converged": bool(fit.success and (integ is None or integ.converged.all())),
            "peak_mb": peak_rss_mb(),
            "params": np.asarray(r.params[:m.k_fep + m.k_vcp]).tolist()}


def paired(case: str, repeats: int = 5) -> dict:
    """The once-compiled ratios measured in one process, interleaved: after a call of each
    fit (compiling it), ``repeats`` rounds each timing ``fit_laplace(priors=True)`` and then
    the integrated fit(s); the median over rounds of each round's ratio.  The shared machine's
    speed drifts by 20–40% over minutes, which moves the ratio of two separate processes'
    medians; a round's two fits run within a second of each other."""
    import warnings

    m = model(case)
    kinds = {"priors": False, "integrate": True}
    if case == "grouseticks":
        kinds["ccd"] = "ccd"
    times: dict = {k: [] for k in kinds}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rnd in range(1 + repeats):
            for k, integ in kinds.items():
                t0 = time.perf_counter()
                m.fit_laplace(priors=True, integrate=integ)
                if rnd:
                    times[k].append(time.perf_counter() - t0)
    base = np.array(times["priors"])
    return {"case": case, "fit": "paired", **{
        f"ratio_{k}": float(np.median(np.array(times[k]) / base)) for k in kinds if k != "priors"}}


def run_worker(case: str, which: str, repeats: int = 5, timeout: float = 900) -> dict:
    """:func:`worker` in a fresh subprocess without the persistent compilation cache."""
    env = dict(os.environ, BAYESGLMM_CACHE_DIR="0")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", case,
                          which, "--repeats", str(repeats)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{case} {which} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


FITS = [("fit_map()", "fit_map", {}), ("fit_vb()", "fit_vb", {}),
        ("fit_laplace(priors=False)", "fit_laplace", {"priors": False}),
        ("fit_laplace(priors=True)", "fit_laplace", {"priors": True}),
        ("fit_laplace(priors=True, integrate=\"ccd\")", "fit_laplace",
         {"priors": True, "integrate": "ccd"}),
        ("fit_laplace(priors=True, integrate=True)", "fit_laplace",
         {"priors": True, "integrate": True})]


def accuracy(case: str, vcp_p: float) -> list[dict]:
    """Every fit of ``case`` against its NUTS reference (tests/reference): the largest
    |mean error| (in NUTS posterior SDs) and |SD ratio − 1| over fe and over vcp, and the
    median and 90th percentile of both over the random effects."""
    import warnings

    ref = json.loads((ROOT / "tests" / "reference" / f"posterior_nuts_{case}.json")
                     .read_text())["fits"][f"vcp_p={vcp_p},fe_p=2.0"]
    m = model(case, vcp_p=vcp_p)
    fe_m, fe_s = (np.array(list(ref[k].values())) for k in ("fe_mean", "fe_sd"))
    vp_m, vp_s = (np.array(list(ref[k].values())) for k in ("vcp_mean", "vcp_sd"))
    key = [(m.vcp_names[c], n.split("[")[-1].rstrip("]")) for n, c in zip(m.vc_names, m.ident)]
    vc_m = np.array([ref["vc_mean"][c][lv] for c, lv in key])
    vc_s = np.array([ref["vc_sd"][c][lv] for c, lv in key])
    out = []
    for label, meth, kw in FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = getattr(m, meth)(**kw)
        e = lambda a, b, s: np.abs(a - b) / s  # noqa: E731
        q = lambda a: (float(np.median(a)), float(np.quantile(a, 0.9)))  # noqa: E731
        out.append({"case": case, "vcp_p": vcp_p, "fit": label,
                    "fe_mean": float(np.max(e(r.fe_mean, fe_m, fe_s))),
                    "fe_sd": float(np.max(np.abs(r.fe_sd / fe_s - 1))),
                    "vcp_mean": float(np.max(e(r.vcp_mean, vp_m, vp_s))),
                    "vcp_sd": float(np.max(np.abs(r.vcp_sd / vp_s - 1))),
                    "vc_mean": q(e(r.vc_mean, vc_m, vc_s)),
                    "vc_sd": q(np.abs(r.vc_sd / vc_s - 1))})
    return out


def render_accuracy(rows: list[dict]) -> str:
    lines = [
        "<!-- BEGIN integrate-accuracy -->",
        "## Accuracy against NUTS (`benchmarks/bench_integrate.py --accuracy`)",
        "",
        "Errors against the NUTS posteriors of `tests/reference/posterior_nuts_*.json` "
        "(fe_p = 2): mean errors in NUTS posterior SDs, SD errors as |SD / SD_NUTS − 1|; "
        "fe and vcp: the largest over the parameters; vc: median / 90th percentile over the "
        "random effects.",
        "",
        "| data, vcp_p | fit | fe mean | fe SD | vcp mean | vcp SD | vc mean (med / 90%) "
        "| vc SD (med / 90%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']}, {r['vcp_p']:g} | `{r['fit']}` | {r['fe_mean']:.3f} | "
            f"{r['fe_sd']:.3f} | {r['vcp_mean']:.2f} | {r['vcp_sd']:.3f} | "
            f"{r['vc_mean'][0]:.3f} / {r['vc_mean'][1]:.3f} | "
            f"{r['vc_sd'][0]:.3f} / {r['vc_sd'][1]:.3f} |")
    lines += ["<!-- END integrate-accuracy -->", ""]
    return "\n".join(lines)


def render(rows: list[dict]) -> str:
    from benchmarks._report import machine

    lines = [
        "<!-- BEGIN integrate -->",
        "## Integrated Laplace fit: cost against the mode (`benchmarks/bench_integrate.py`)",
        "",
        f"Machine: {machine()}.  Each fit in a fresh process without the persistent "
        "compilation cache: *cold* is the first call (compilation included), *steady* the "
        "median of five more; peak is the process's peak resident memory (VmHWM).  `integrate=True` includes "
        "the mode fit.  Measured on 2 CPU cores shared with other jobs: ratios are more "
        "telling than absolute times, and the ratio of the processes' CPU times (all "
        "threads) is the least affected by the other jobs.  *Steady ratio, interleaved*: both "
        "fits in one process, timed in alternation (median over five rounds of each round's "
        "ratio): the once-compiled ratio least moved by the machine's drifting speed.",
        "",
        "| case | rows | k_fep | k_vcp | k_vc | nodes | priors cold / steady (s) | integrate "
        "cold / steady (s) | ratio cold / steady | ratio cold / steady, CPU time | steady "
        "ratio, interleaved | peak MB priors / integrate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["case"], r["fit"]): r for r in rows}
    for case, which in [(c, w) for c in dict.fromkeys(r["case"] for r in rows)
                        for w in ("integrate", "ccd")]:
        p, i = by.get((case, "priors")), by.get((case, which))
        if p is None or i is None:
            continue
        label = case if which == "integrate" else f'{case}, `integrate="ccd"`'
        lines.append(
            f"| {label} | {p['rows']:,} | {p['k_fep']} | {p['k_vcp']} | {p['k_vc']} | "
            f"{i['nodes']} | {p['cold_s']:.1f} / {p['steady_s']:.2f} | {i['cold_s']:.1f} / "
            f"{i['steady_s']:.2f} | {i['cold_s'] / p['cold_s']:.2f} / "
            f"{i['steady_s'] / p['steady_s']:.1f} | {i['cold_cpu_s'] / p['cold_cpu_s']:.2f} / "
            f"{i['steady_cpu_s'] / p['steady_cpu_s']:.1f} | "
            f"{by.get((case, 'paired'), {}).get(f'ratio_{which}', float('nan')):.1f} | "
            f"{p['peak_mb']:.0f} / {i['peak_mb']:.0f} |")
    lines += ["<!-- END integrate -->", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "FIT"))
    ap.add_argument("--repeats", type=int, default=5, help="steady-state calls per fit")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--accuracy", action="store_true",
                    help="the accuracy table against NUTS instead of the timings")
    args = ap.parse_args(argv)
    if args.worker:
        case, which = args.worker
        out = (paired(case, args.repeats) if which == "paired"
               else worker(case, which, repeats=args.repeats))
        print(json.dumps(out))
        return
    if args.accuracy:
        rows = [r for case in ("cbpp", "grouseticks") for vcp_p in (1.0, 0.5)
                for r in accuracy(case, vcp_p)]
        text = render_accuracy(rows)
        print(text)
        if not args.no_write:
            _write_section(text, "integrate-accuracy")
            _write_docs_table(text)
        return
    rows = []
    for case in args.cases.split(","):
        # where the default design left the CCD (grouseticks), the CCD's cost too
        for which in ("priors", "integrate", "ccd") if case == "grouseticks" else (
                "priors", "integrate"):
            rows.append(run_worker(case, which, args.repeats))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "params"}), flush=True)
        rows.append(run_worker(case, "paired", args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    text = render(rows)
    print(text)
    if not args.no_write:
        _write_section(text, "integrate")


def _write_docs_table(text: str) -> None:
    """Copy the accuracy table (its header and rows) into docs/which_fit.md, between its
    ``<!-- accuracy table -->`` and ``<!-- end accuracy table -->`` markers."""
    doc = ROOT / "docs" / "which_fit.md"
    old = doc.read_text()
    begin, end = "<!-- accuracy table -->", "<!-- end accuracy table -->"
    if begin not in old or end not in old:
        return
    table = "\n".join(ln for ln in text.splitlines() if ln.startswith("|"))
    i, j = old.index(begin) + len(begin), old.index(end)
    doc.write_text(old[:i] + "\n" + table + "\n" + old[j:])


def _write_section(text: str, name: str) -> None:
    """Replace (or append) the ``name`` section of benchmarks/RESULTS.md."""
    old = OUT.read_text()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin in old:
        i, j = old.index(begin), old.index(end) + len(end)
        new = old[:i] + text.rstrip("\n") + old[j:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    OUT.write_text(new)


if __name__ == "__main__":
    main()
