"""Command line: ``python -m bayesglmm cache info|clear`` and ``python -m bayesglmm warmup``.

``cache info`` prints where the persistent compilation cache is and how large it is; ``cache
clear`` empties it; ``warmup`` fills it by fitting small models on the bundled data (binomial
``fit_map``/``fit_vb``/``fit_laplace`` on cbpp, ``mixedlm`` on sleepstudy), so that a later
first fit of the same shapes loads compiled programs instead of compiling them.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import _cache


def _size(n: int) -> str:
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
    import warnings

    from . import BinomialBayesMixedGLM, datasets, mixedlm

    if not _cache.cache_info()["enabled"]:
        print("note: the compilation cache is disabled; warmup only compiles in this process")
    cbpp = datasets.load("cbpp")
    binary = datasets.expand_binomial(cbpp, "incidence", "size")
    sleep = datasets.load("sleepstudy")
    jobs = [
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bayesglmm``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m bayesglmm", description="bayesglmm's compilation cache and warm-up")
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache", help="inspect or empty the persistent compilation cache")
    cache.add_argument("action", choices=["info", "clear"])
    sub.add_parser("warmup", help="fill the compilation cache by fitting small bundled models")
    args = parser.parse_args(argv)
    if args.command == "warmup":
        return _warmup()
    return _info() if args.action == "info" else _clear()


if __name__ == "__main__":
    sys.exit(main())
