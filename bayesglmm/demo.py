"""Demo: fit the bundled cbpp data (lme4) by fit_map and fit_vb and print both summaries.

Run with ``python -m bayesglmm.demo``.  cbpp records, for 15 herds over 4 periods, how many of
``size`` cattle developed contagious bovine pleuropneumonia (``incidence``).  The model is a
logistic regression on period with a random intercept per herd, fitted to the binomial counts
(``n_trials="size"``; equivalent to one 0/1 row per animal).
"""

from __future__ import annotations

import time

from . import BinomialBayesMixedGLM, datasets


def main() -> None:
    df = datasets.load("cbpp")
    model = BinomialBayesMixedGLM.from_formula(
        "incidence ~ C(period)", {"herd": "0 + C(herd)"}, df, n_trials="size"
    )
    print(f"cbpp: {len(df)} herd-periods, {int(df['size'].sum())} animals, "
          f"{model.k_vc} herd random effects\n")
    for name, fit in (("fit_map (Laplace at the joint mode)", model.fit_map),
                      ("fit_vb (mean-field variational Bayes)", model.fit_vb)):
        t0 = time.perf_counter()
        result = fit(rng=0)
        dt = time.perf_counter() - t0
        print(f"--- {name}: {dt:.2f} s including JIT compilation")
        print(result.summary())
        print()
    print("Herd random effects (fit_vb posterior):")
    print(result.random_effects("herd").round(3).to_string())


if __name__ == "__main__":
    main()
