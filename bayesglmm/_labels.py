"""Short labels for random-effect levels, shared by the ArviZ export and the plots."""

from __future__ import annotations

import re

__all__ = ["level_labels"]


def level_labels(names: list[str]) -> list[str]:
    """The level inside the first brackets of each name (``"C(herd)[1]"``,
    ``"herd[1]:period"`` -> ``"1"``) when those are unique, else the names unchanged."""
    short = []
    for s in names:
        m = re.search(r"\[([^\]]*)\]", s)
        short.append(m.group(1) if m else s)
    return short if len(set(short)) == len(short) else list(names)
