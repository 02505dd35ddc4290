"""Random-effect term specifications: one parser for both model kinds.

A term is one grouping factor with a ``q``-vector of covariates per row (``b ~ N(0, σ² λλᵀ)``
per level, Bates et al. 2015 §2).  This module only handles *text*: it splits
``"y ~ x + (x | g) + (1 | a/b)"`` into the fixed-effects formula and a list of
:class:`TermSpec`, and turns statsmodels' ``re_formula`` / ``vc_formula`` (MixedLM) and
``vc_formulas`` (the Bayesian mixed GLMs) into the same specs.  :func:`glmm_specs` and
:func:`lmm_specs` give each model kind its fixed formula and its terms in table order.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["TermSpec", "glmm_specs", "groups_terms", "lmm_specs", "split_formula", "split_top"]


class TermSpec(NamedTuple):
    """One random-effect term before it meets the data."""

    expr: str  # formulaic right-hand side of the covariates, e.g. "1", "0 + Days", "0 + C(x)"
    factors: tuple  # column names whose interaction is the grouping factor, e.g. ("a", "b")
    kind: str  # "re": correlated (unstructured λ); "diag": uncorrelated (diagonal λ);
    #            "vc": statsmodels variance component (one variance shared by all columns;
    #            no factors: the GLMM's vc_formulas, whose formula holds the factor itself)
    name: str  # label used in tables: "Subject", "a:b", or the vc_formula key


def split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` characters that are not inside parentheses or brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out]


_BAR = re.compile(r"^\((.*?)(\|\|?)(.*)\)$", re.DOTALL)

# a grouping factor may be written factor(g), as.factor(g) (R) or C(g) (patsy/formulaic)
_FACTOR_CALL = re.compile(r"^(?:factor|as\.factor|C)\(\s*([^(),]+?)\s*(?:,[^()]*)?\)$")


def _factor_name(text: str) -> str:
    """The column behind a grouping factor: ``"g"`` for ``g``, ``factor(g)`` or ``C(g)``."""
    text = text.strip()
    m = _FACTOR_CALL.match(text)
    return m.group(1) if m else text


def _bar_term(token: str) -> list[TermSpec] | None:
    """``"(expr | g)"`` → term specs, or None when ``token`` is not a bar term."""
    tok = token.strip()
    if not (tok.startswith("(") and tok.endswith(")")):
        return None
    inner = tok[1:-1]
    # the bar must be at depth 0 of the inner text
    depth = 0
    pos = None
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            pos = i
            break
    if pos is None:
        return None
    double = inner[pos + 1 : pos + 2] == "|"
    expr = inner[:pos].strip() or "1"
    group = inner[pos + 2 if double else pos + 1 :].strip()
    if not group:
        raise ValueError(f"random-effect term {token!r} has no grouping factor after '|'")
    kind = "diag" if double else "re"
    # nesting a/b/c → a, a:b, a:b:c (lme4's `/` operator)
    nest = [g.strip() for g in group.split("/")]
    specs = []
    for k in range(1, len(nest) + 1):
        parts = tuple(_factor_name(p) for f in nest[:k] for p in f.split(":"))
        specs.append(TermSpec(expr, parts, kind, ":".join(parts)))
    return specs


def split_formula(formula: str) -> tuple[str, list[TermSpec]]:
    """Separate lme4-style random terms from a formula.

    Returns the fixed-effects formula (``"y ~ x"``) and one :class:`TermSpec` per random term.

    >>> fixed, terms = split_formula("y ~ x + (1 | s) + (x | a/b)")
    >>> fixed, [t.name for t in terms]
    ('y ~ x', ['s', 'a', 'a:b'])
    """
    if "~" not in formula:
        raise ValueError(f"formula {formula!r} must have the form 'response ~ terms'")
    lhs, rhs = formula.split("~", 1)
    fixed, terms = [], []
    for tok in split_top(rhs, "+"):
        if not tok:
            continue
        spec = _bar_term(tok)
        if spec is None:
            if "|" in tok:
                raise ValueError(
                    f"could not read random-effect term {tok!r}; write it as '(expr | group)'"
                )
            fixed.append(tok)
        else:
            terms.extend(spec)
    rhs_fixed = " + ".join(fixed) if fixed else "1"
    return f"{lhs.strip()} ~ {rhs_fixed}", terms


def _strip_tilde(f: str) -> str:
    f = f.strip()
    return f[1:].strip() if f.startswith("~") else f


def groups_terms(group_name: str, re_formula: str | None, vc_formula: dict | None) -> list[TermSpec]:
    """statsmodels' ``re_formula`` / ``vc_formula`` on the ``groups`` factor → term specs.

    ``re_formula=None`` is a random intercept, unless ``vc_formula`` is given (then, as in
    statsmodels, there is none); ``"0"`` means no random effect of the group itself;
    ``"~x"`` correlated intercept and slope.  The variance components come in the order of
    their sorted names, as statsmodels orders them (``vcomp``, ``params``, ``bse``), not the
    dict's.
    """
    specs = []
    if re_formula is None:
        expr = "0" if vc_formula else "1"
    else:
        expr = _strip_tilde(re_formula)
    if expr not in ("0", "-1", "0 + 0"):
        specs.append(TermSpec(expr, (group_name,), "re", group_name))
    for name, f in sorted((vc_formula or {}).items(), key=lambda kv: str(kv[0])):
        specs.append(TermSpec(_strip_tilde(f), (group_name,), "vc", str(name)))
    return specs


def glmm_specs(formula: str, vc_formulas: dict | None) -> tuple[str, list[TermSpec]]:
    """The fixed formula and the terms of a GLMM: ``vc_formulas`` in their order (one
    variance each), then the formula's lme4-style terms.

    >>> fixed, terms = glmm_specs("y ~ x + (1 | g)", {"h": "0 + C(h)"})
    >>> fixed, [(t.name, t.kind) for t in terms]
    ('y ~ x', [('h', 'vc'), ('g', 're')])
    """
    if vc_formulas is None:
        vc_formulas = {}
    if not isinstance(vc_formulas, dict):
        raise ValueError(
            f"vc_formulas must be a dict {{name: formula}}, got {type(vc_formulas).__name__}"
        )
    fixed, bars = split_formula(formula)
    return fixed, [TermSpec(f, (), "vc", name) for name, f in vc_formulas.items()] + bars


def lmm_specs(formula: str, group_name: str | None, re_formula: str | None,
              vc_formula: dict | None) -> tuple[str, list[TermSpec]]:
    """The fixed formula and the terms of a MixedLM: those of ``groups`` (statsmodels'
    ``re_formula``, ``vc_formula``), then the formula's lme4-style terms.

    With lme4-style terms and ``groups``, ``groups`` adds no implicit random intercept.
    """
    fixed, bars = split_formula(formula)
    if group_name is None and not bars:
        raise ValueError(
            "give groups= (statsmodels style) or random terms such as '(1 | g)' in the "
            "formula (lme4 style)"
        )
    if group_name is None and (re_formula is not None or vc_formula):
        raise ValueError("re_formula and vc_formula need groups=")
    specs = []
    if group_name is not None:
        if bars and re_formula is None:
            re_formula = "0"  # lme4-style terms given: no implicit random intercept
        specs = groups_terms(group_name, re_formula, vc_formula)
    specs += bars
    if not specs:
        raise ValueError("the model has no random effects")
    return fixed, specs
