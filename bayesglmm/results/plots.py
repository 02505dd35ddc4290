"""The plot methods both results classes share, each a thin call into :mod:`bayesglmm.plot`
(the ``[plot]`` extra, imported on first use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any  # matplotlib (optional) Axes or arrays of them

__all__ = ["PlotMethods"]


class PlotMethods:
    """``plot_caterpillar``, ``plot_forest``, ``plot_fitted`` for a fit's results."""

    def plot_caterpillar(self, term: str | None = None, **kwargs: Any) -> Any:
        """Random effects per factor, sorted, with intervals (GLMM: posterior SDs; MixedLM:
        BLUPs with lme4's condVar): :func:`bayesglmm.plot.caterpillar`."""
        from ..plot import caterpillar

        return caterpillar(self, term, **kwargs)

    def plot_forest(self, *others: Any, labels: Sequence[str] | None = None,
                    **kwargs: Any) -> Any:
        """Fixed effects of this fit and ``others`` side by side: :func:`bayesglmm.plot.forest`."""
        from ..plot import forest

        return forest([self, *others], labels, **kwargs)

    def plot_fitted(self, **kwargs: Any) -> Any:
        """Observed and residuals against fitted values: :func:`bayesglmm.plot.fitted`."""
        from ..plot import fitted

        return fitted(self, **kwargs)
