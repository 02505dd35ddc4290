"""The command line: ``bayesglmm`` (console script) and ``python -m bayesglmm``.

::

    bayesglmm fit DATA.csv|.parquet "y ~ x + (1 | g)" --family binomial|poisson|negbin|gaussian
              [--fit map|vb|laplace|integrate|reml|ml] [--trials COL] [--exposure COL]
              [--vc NAME=FORMULA ...] [--groups COL] [--out results.json|.csv]
    bayesglmm datasets [NAME [--out FILE.csv|.parquet]]
    bayesglmm warmup
    bayesglmm cache info|clear
    bayesglmm bench

``fit`` prints the summary and, with ``--out``, writes the estimates (:mod:`bayesglmm.tables`).
Random effects come from lme4 bars in the formula (``(1 | g)``) or from ``--vc`` entries
(statsmodels' ``vc_formulas``, e.g. ``--vc "herd=0 + C(herd)"``); for ``gaussian`` also from
``--groups`` (statsmodels' ``groups``, a random intercept).  ``warmup`` fills the persistent
compilation cache by fitting small models on the bundled data; ``cache info|clear`` shows or
empties it; ``bench`` runs :mod:`bayesglmm.bench`.

Errors in the input (a missing file, a bad formula, an unknown column) print one line on
stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

from . import _cache

__all__ = ["main"]

FITS = {"binomial": ("map", "vb", "laplace", "integrate"), "poisson": ("map", "vb", "laplace",
                                                                          "integrate"),
        "negbin": ("map", "vb", "laplace", "integrate"), "gaussian": ("reml", "ml")}
DEFAULT_FIT = {"binomial": "integrate", "poisson": "integrate", "negbin": "integrate",
               "gaussian": "reml"}


class InputError(Exception):
    """A problem with the command line's input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage and exits; we raise one line instead
        raise InputError(f"{message} (see: {self.prog} --help)")


# ---------------------------------------------------------------------- cache and warm-up
def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _info() -> int:
    info = _cache.cache_info()
    cap = "no cap" if info["max_bytes"] < 0 else _size(info["max_bytes"])
    print(f"path:    {info['path']}")
    print(f"enabled: {'yes' if info['enabled'] else 'no (' + info['reason'] + ')'}")
    print(f"entries: {info['entries']} ({_size(info['bytes'])} of {cap})")
    return 0


def _clear() -> int:
    n = _cache.clear_cache()
    print(f"removed {n} entries from {_cache.cache_dir()}")
    return 0


def _warmup() -> int:
    """Fit small models on the bundled data (binomial fit_map/fit_vb/fit_laplace on cbpp,
    mixedlm on sleepstudy) so that a later first fit of the same shapes loads compiled
    programs instead of compiling them."""
    from . import BinomialBayesMixedGLM, datasets, mixedlm

    if not _cache.cache_info()["enabled"]:
        print("note: the compilation cache is disabled; warmup only compiles in this process")
    cbpp = datasets.load("cbpp")
    binary = datasets.expand_binomial(cbpp, "incidence", "size")
    sleep = datasets.load("sleepstudy")
    jobs: list[tuple[str, Any]] = [  # (name, fit: a GLMM or an LMM result)
        ("cbpp fit_map", lambda: BinomialBayesMixedGLM.from_formula(
            "incidence ~ C(period)", {"herd": "0 + C(herd)"}, cbpp, n_trials="size").fit_map()),
        ("cbpp binary fit_vb", lambda: BinomialBayesMixedGLM.from_formula(
            "y ~ C(period)", {"herd": "0 + C(herd)"}, binary).fit_vb()),
        ("cbpp fit_laplace", lambda: BinomialBayesMixedGLM.from_formula(
            "incidence ~ C(period)", {"herd": "0 + C(herd)"}, cbpp,
            n_trials="size").fit_laplace(priors=False)),
        ("sleepstudy mixedlm", lambda: mixedlm(
            "Reaction ~ Days", sleep, groups="Subject", re_formula="~Days").fit()),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on toy data are not the point here
        for name, fit in jobs:
            t0 = time.perf_counter()
            result = fit()
            result.summary()
            print(f"{name:<22s} {time.perf_counter() - t0:6.1f} s")
    return _info()


# ---------------------------------------------------------------------- datasets
def _datasets(args) -> int:
    from . import datasets

    if args.name is None:
        for name in datasets.names():
            df = datasets.load(name)
            print(f"{name:<12s} {df.shape[0]:>5d} rows  {', '.join(map(str, df.columns))}")
        return 0
    df = datasets.load(args.name)
    if args.out is None:
        df.to_csv(sys.stdout, index=False)
        return 0
    suffix = args.out.rsplit(".", 1)[-1].lower()
    if suffix == "csv":
        df.to_csv(args.out, index=False)
    elif suffix in ("parquet", "pq"):
        try:
            df.to_parquet(args.out, index=False)
        except ImportError as err:
            raise InputError("writing Parquet needs pyarrow: pip install "
                             "'bayesglmm[parquet]'") from err
    else:
        raise InputError(f"unknown output file type {args.out!r}: use .csv or .parquet")
    print(f"wrote {args.name} ({len(df)} rows) to {args.out}")
    return 0


# ---------------------------------------------------------------------- fit
def _vc_formulas(entries) -> dict:
    out = {}
    for e in entries or ():
        name, sep, formula = e.partition("=")
        if not sep or not name.strip() or not formula.strip():
            raise InputError(f"--vc expects NAME=FORMULA, got {e!r}")
        out[name.strip()] = formula.strip()
    return out


def _fit(args) -> int:
    from .tables import read_table, write_estimates

    family = args.family
    how = args.fit or DEFAULT_FIT[family]
    if how not in FITS[family]:
        raise InputError(f"--fit {how} does not apply to the {family} family; use one of "
                         f"{', '.join(FITS[family])}")
    if args.trials and family != "binomial":
        raise InputError("--trials applies to the binomial family only")
    if args.exposure and family not in ("poisson", "negbin"):
        raise InputError("--exposure applies to the poisson and negbin families only")
    if args.out and not args.out.lower().endswith((".json", ".csv")):
        raise InputError(f"unknown output file type {args.out!r}: use .json or .csv")
    data = read_table(args.data)
    vc = _vc_formulas(args.vc)
    if family == "gaussian":
        from . import mixedlm

        if vc:
            raise InputError("--vc is for the binomial and poisson families; for gaussian use "
                             "lme4 bars in the formula or --groups")
        result = mixedlm(args.formula, data, groups=args.groups).fit(reml=how == "reml")
    else:
        from . import (BinomialBayesMixedGLM, NegativeBinomialBayesMixedGLM,
                       PoissonBayesMixedGLM)

        if args.groups:
            raise InputError("--groups is for the gaussian family; use (1 | g) or --vc")
        classes: dict[str, Any] = {"binomial": BinomialBayesMixedGLM,
                                    "poisson": PoissonBayesMixedGLM,
                                    "negbin": NegativeBinomialBayesMixedGLM}
        cls = classes[family]
        kw = {"n_trials": args.trials} if args.trials else {}
        if args.exposure:
            kw["exposure"] = args.exposure
        model = cls.from_formula(args.formula, vc, data, **kw)  # {} with lme4 bars only
        if model.k_vc == 0:
            raise InputError(f"the model has no random effects: add a term such as (1 | g) to "
                             f"the formula {args.formula!r}, or --vc NAME=FORMULA")
        result = {"map": lambda: model.fit_map(), "vb": lambda: model.fit_vb(rng=args.seed),
                  "laplace": lambda: model.fit_laplace(priors=True),
                  "integrate": lambda: model.fit_laplace(priors=True, integrate=True)}[how]()
    print(result.summary())
    if args.out:
        info = {"data": args.data, "formula": args.formula, "vc_formulas": vc, "family": family,
                "fit": how}
        path = write_estimates(result, args.out, info)
        print(f"wrote estimates to {path}")
    return 0


# ---------------------------------------------------------------------- parser and main
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bayesglmm`` (one sub-command each)."""
    p = _Parser(prog="bayesglmm", description="Mixed-effects models on JAX: fit from the shell, "
                "bundled data, compilation cache, a quick benchmark.")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    f = sub.add_parser("fit", help="fit a model to a CSV or Parquet file and print its summary")
    f.add_argument("data", help="a .csv or .parquet file")
    f.add_argument("formula", help='e.g. "y ~ x + (1 | g)" (lme4 bars for random effects)')
    f.add_argument("--family", required=True, choices=sorted(FITS))
    f.add_argument("--fit", choices=["map", "vb", "laplace", "integrate", "reml", "ml"],
                   help="binomial/poisson: map, vb, laplace (priors=True) or integrate (default);"
                        " gaussian: reml (default) or ml")
    f.add_argument("--trials", metavar="COL", help="binomial: the column of trials per row")
    f.add_argument("--exposure", metavar="COL", help="poisson: the column of exposures")
    f.add_argument("--vc", action="append", metavar="NAME=FORMULA",
                   help='a variance component, e.g. "herd=0 + C(herd)" (repeatable)')
    f.add_argument("--groups", metavar="COL", help="gaussian: statsmodels' groups column")
    f.add_argument("--seed", type=int, default=0, help="fit_vb's random start (default 0)")
    f.add_argument("--out", metavar="FILE", help="write the estimates (.json or .csv)")
    f.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    d = sub.add_parser("datasets", help="list the bundled datasets, or export one")
    d.add_argument("name", nargs="?", help="a dataset to write (CSV on stdout without --out)")
    d.add_argument("--out", metavar="FILE", help="write it to a .csv or .parquet file")
    sub.add_parser("warmup", help="fill the compilation cache by fitting small bundled models")
    c = sub.add_parser("cache", help="inspect or empty the persistent compilation cache")
    c.add_argument("action", choices=["info", "clear"])
    sub.add_parser("bench", help="a quick benchmark on the bundled data (about 15 s)")
    return p


def _input_errors() -> tuple:
    errors = [InputError, ValueError, KeyError, OSError, ImportError]
    try:
        from formulaic.errors import FormulaicError

        errors.append(FormulaicError)
    except ImportError:  # pragma: no cover - formulaic is a dependency
        pass
    return tuple(errors)


def _one_line_warnings(message: Warning | str, category: type[Warning], filename: str,
                       lineno: int, line: str | None = None) -> str:
    return f"warning: {category.__name__}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 2 for input errors, 1 otherwise)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    shown = warnings.formatwarning
    warnings.formatwarning = _one_line_warnings  # warnings as one line each, not source code
    try:
        args = build_parser().parse_args(argv)
        if args.command == "fit":
            return _fit(args)
        if args.command == "datasets":
            return _datasets(args)
        if args.command == "warmup":
            return _warmup()
        if args.command == "bench":
            from .bench import run

            run()
            return 0
        return _info() if args.action == "info" else _clear()
    except _input_errors() as err:
        if debug:
            raise
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"bayesglmm: error: {msg}", file=sys.stderr)
        return 2
    except Exception as err:  # an unexpected failure: still one line, but exit status 1
        if debug:
            raise
        print(f"bayesglmm: internal error: {type(err).__name__}: {' '.join(str(err).split())} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
