"""Linear constraints on named parameters from text, ``"x1 = 0, 2*x2 - x3 = 1"`` → ``(R, q)``.

The form statsmodels' ``t_test("...")`` reads: comma-separated equations, each side a sum of
``[number *] name`` terms and numbers (no equation: ``= 0``).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["parse_constraints"]

_TERM = re.compile(r"([+-]?)\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?)\s*\*?\s*)?([A-Za-z_][\w.:\[\]()]*)?")


def _side(text: str, names: list, sign: float, row: np.ndarray) -> float:
    """Add ``sign ×`` the coefficients of ``text`` to ``row``; return its constant."""
    const = 0.0
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot read the constraint {text!r} at {text[pos:]!r}")
        s = -1.0 if m.group(1) == "-" else 1.0
        num = float(m.group(2)) if m.group(2) else 1.0
        if m.group(3):
            if m.group(3) not in names:
                raise ValueError(f"{m.group(3)!r} is not a parameter name; names: {names}")
            row[names.index(m.group(3))] += sign * s * num
        elif m.group(2):
            const += sign * s * num
        pos = m.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return const


def parse_constraints(text: str, names: list) -> tuple[np.ndarray, np.ndarray]:
    """``(R (m, k), q (m,))`` with ``R β = q`` for the comma-separated equations in ``text``."""
    rows, rhs = [], []
    for eq in text.split(","):
        lhs, _, right = eq.partition("=")
        row = np.zeros(len(names))
        c = _side(lhs, names, 1.0, row) + _side(right or "0", names, -1.0, row)
        rows.append(row)
        rhs.append(-c)
    return np.array(rows), np.array(rhs)
