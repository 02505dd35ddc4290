"""Make the plots shown in the docs and the README with bayesglmm.plot.

    python docs/make_images.py          # writes docs/images/*.png (about a minute)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from bayesglmm import BinomialBayesMixedGLM, PoissonBayesMixedGLM, datasets, mixedlm  # noqa: E402
from bayesglmm import plot  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def save(axes, name: str) -> None:
    fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
    fig.savefig(OUT / name, dpi=90)
    print("wrote", OUT / name)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    warnings.simplefilter("ignore")
    cbpp = datasets.load("cbpp")
    model = BinomialBayesMixedGLM.from_formula("incidence ~ C(period)", {"herd": "0 + C(herd)"},
                                               cbpp, n_trials="size")
    fits = {"fit_map": model.fit_map(), "fit_vb": model.fit_vb(rng=0),
            "fit_laplace(priors=True)": model.fit_laplace(),
            "fit_laplace(integrate=True)": model.fit_laplace(integrate=True)}
    best = fits["fit_laplace(integrate=True)"]
    save(plot.forest(fits), "cbpp_forest.png")
    save(best.plot_caterpillar(), "cbpp_caterpillar.png")
    save(best.plot_fitted(), "cbpp_fitted.png")

    sleep = mixedlm("Reaction ~ Days + (Days | Subject)", datasets.load("sleepstudy")).fit()
    save(sleep.plot_caterpillar(), "sleepstudy_caterpillar.png")
    save(sleep.plot_profile("Subject: Days"), "sleepstudy_profile.png")

    grouse = PoissonBayesMixedGLM.from_formula(
        "TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", {}, datasets.load("grouseticks"))
    save(grouse.fit_laplace().plot_caterpillar(max_labels=0),
         "grouseticks_caterpillar.png")

    pen = mixedlm("diameter ~ 1 + (1 | plate) + (1 | sample)", datasets.load("penicillin")).fit()
    save(pen.plot_caterpillar(), "penicillin_caterpillar.png")


if __name__ == "__main__":
    main()
