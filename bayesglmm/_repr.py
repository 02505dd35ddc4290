"""One-line ``repr`` of the model classes: family, formula, rows, factors and their levels."""

from __future__ import annotations

import numpy as np

__all__ = ["glmm_repr", "lmm_repr"]


def _levels(pairs) -> str:
    return ", ".join(f"{name} ({n} levels)" for name, n in pairs) or "none"


def glmm_repr(model) -> str:
    """``<BinomialBayesMixedGLM: incidence ~ C(period) + herd: 0 + C(herd) | n=56, fixed=4,
    random: herd (15 levels)>``; array models show ``(arrays)`` for the formula."""
    formula = "(arrays)"
    if model._formula is not None:
        fixed, vc = model._formula[0], model._formula[1]
        formula = " + ".join([fixed] + [f"{{{k}: {v}}}" for k, v in vc.items()])
    counts = np.bincount(np.asarray(model.ident, np.int64), minlength=model.layout.k_sd)
    pairs = [(str(model.vcp_names[k]), int(counts[k])) for k in range(model.layout.k_sd)]
    return (f"<{type(model).__name__}: {formula} | n={model.nobs}, fixed={model.k_fep}, "
            f"random: {_levels(pairs)}>")


def lmm_repr(model) -> str:
    """``<MixedLM: Reaction ~ Days + (Days | Subject) | n=180, fixed=2, random: Subject
    (18 levels)>``."""
    formula = model.formula if model.formula is not None else "(arrays)"
    pairs, seen = [], set()
    for t in model.design.terms:
        label = t.name if t.kind == "vc" else t.group
        if label not in seen:
            seen.add(label)
            pairs.append((label, t.n_levels))
    return (f"<{type(model).__name__}: {formula} | n={model.nobs}, fixed={model.k_fe}, "
            f"random: {_levels(pairs)}>")
