"""Cost estimates checked before compiling, and the iteration budgets of every fit.

A wall clock cannot interrupt a compiled loop or XLA's compiler, so each fit is bounded in
two ways instead:

* **before compiling**, a cheap estimate of the problem's size for the chosen method is
  compared with a limit here; too large a problem is a ``ValueError`` that names the
  estimate and suggests the method that fits (:func:`check_laplace`,
  :func:`check_integrate`);
* **while running**, every loop has an iteration budget — ``minim_opts["maxiter"]`` of the
  outer optimiser (fit_map, fit_vb: 200 by default; fit_laplace: 100), ``inner_maxiter`` of
  fit_laplace's inner Newton solve (100), at most 40 line-search halvings per step, the GLM
  start's 25 steps, ``MixedLM.fit(maxiter=1000)``.  An exhausted budget is a status code
  (``solvers.STATUS_MESSAGES``): the result has ``success``/``converged`` False and a
  ``ConvergenceWarning`` is issued — the fit never runs unbounded.

Models call :func:`check_integrate` before fitting, with the node count of fits.nodes'
design (:func:`integrate_points`).
"""

from __future__ import annotations

__all__ = ["DENSE_VC_MAX", "INTEGRATE_MEM_MAX", "INTEGRATE_NODES_MAX", "check_integrate",
           "check_laplace", "integrate_points", "lattice_budget", "node_numbers"]

DENSE_VC_MAX = 8000  # largest k_vc for fit_laplace's dense Cholesky of H_uu (crossed designs)
INTEGRATE_NODES_MAX = 3 ** 6  # nodes of fit_laplace(integrate=True) (the CCD has ≤ 281)
INTEGRATE_MEM_MAX = 4 * 2 ** 30  # bytes held by the nodes' summaries and one node's solve


def check_laplace(k_vc: int, mode, *, what: str = "fit_laplace") -> None:
    """``fit_laplace`` needs random effects, and with crossed factors (``mode`` ``"dense"``
    or ``("schur", ...)``; not ``"diag"`` or ``("block", q)``, whose blocks are q × q; for
    ``("schur_block", q, k_r, ·)`` only the rest's k_r × k_r) factors a dense block of the
    Hessian H_uu of up to k_vc × k_vc:
    refuse above :data:`DENSE_VC_MAX` random effects.  With an observation-level component
    kept by rows (``("schur_obs", c, k_c)``) the dense block is the other k_vc − k_c
    random effects' (kernels.h_uu), and the bound applies to those."""
    if k_vc == 0:
        raise ValueError(f"{what} integrates the random effects out, but the model has none "
                         "(no exog_vc / vc_formulas); use fit_map() or fit_vb(), or a GLM")
    if mode == "diag" or (isinstance(mode, tuple) and mode[0] == "block"):
        return  # no dense block: H_uu is diagonal, or block-diagonal in small blocks
    k = k_vc - mode[2] if isinstance(mode, tuple) and mode[0] == "schur_obs" else k_vc
    if isinstance(mode, tuple) and mode[0] == "schur_block":  # only the rest is dense
        k = mode[2]
    if k > DENSE_VC_MAX:
        raise ValueError(
            f"{what} with crossed random effects forms a dense {k}×{k} block of the Hessian "
            f"of the random effects ({8 * k ** 2 / 2 ** 30:.1f} GiB); at most {DENSE_VC_MAX} "
            "random effects are supported — use fit_map() or fit_vb(), which keep it sparse")


def integrate_points(k_vcp: int, n_points: int | None = None) -> int:
    """The node count of fits.integrate's design (fits.nodes.node_design): Gauss–Hermite for
    one or two variance parameters, the central composite design above, or the product grid
    ``n_points ** k_vcp`` when ``n_points`` is given — counted, not built."""
    from .fits.nodes import MAX_DIM, node_design

    if n_points is not None:
        return int(n_points) ** int(k_vcp)
    if k_vcp > MAX_DIM:
        raise ValueError(
            f"integrate=True over {k_vcp} variance parameters: the node design covers at most "
            f"{MAX_DIM}; use fit_laplace(priors=True) without integrate, or fit_vb()")
    return len(node_design(k_vcp)[0])


def node_numbers(k_vc: int, k_fep: int) -> int:
    """The numbers fits.integrate keeps per node: the random effects' means and variances and
    the fixed effects' mean and covariance."""
    return 2 * k_vc + k_fep * (k_fep + 1)


def lattice_budget(k_vc: int, k_fep: int, itemsize: int = 8) -> int:
    """Most nodes of fits.lattice's exploration: :data:`INTEGRATE_NODES_MAX`, and no more than
    the node summaries (:func:`node_numbers`) that fit in :data:`INTEGRATE_MEM_MAX`.

    >>> lattice_budget(15, 4), lattice_budget(10**8, 4)
    (729, 2)
    """
    return int(min(INTEGRATE_NODES_MAX, INTEGRATE_MEM_MAX // (node_numbers(k_vc, k_fep) * itemsize)))


def check_integrate(k_vcp: int, k_vc: int, k_fep: int, mode, n_points: int | None = None,
                    itemsize: int = 8) -> int:
    """The node count of ``fit_laplace(integrate=True)``, or ``ValueError`` when there is
    nothing to integrate or the design is too large.

    The nodes are solved one after another (fits.integrate), so what is held is one node's
    working set (a dense H_uu of k_vc² numbers for crossed designs) and, per node, its
    summaries: the random effects' means and SDs and the fixed effects' mean and covariance.

    Parameters
    ----------
    k_vcp, k_vc, k_fep : int
        Variance parameters (the design's dimension), random effects, fixed effects.
    mode : ``"diag"``, ``("block", q)``, ``"dense"`` or ``("schur", c, k_c)``
        The H_uu factorisation (dense: k_vc² numbers per node).
    n_points : int, optional
        Points per dimension of a product grid; default the design of fits.nodes.
    itemsize : int
        Bytes per number (8 in float64).

    Returns
    -------
    int
        Number of nodes.

    Examples
    --------
    >>> check_integrate(2, 15, 4, "diag"), check_integrate(3, 15, 4, "diag")
    (25, 15)
    >>> check_integrate(3, 15, 4, "diag", n_points=10)
    Traceback (most recent call last):
    ...
    ValueError: integrate=True would solve at 1000 nodes (at most 729); ...
    """
    if k_vcp == 0 or k_vc == 0:
        raise ValueError("integrate=True integrates over the variance parameters, but the model "
                         "has no random effects; use fit_map() or fit_laplace(integrate=False)")
    nodes = integrate_points(k_vcp, n_points)
    if nodes > INTEGRATE_NODES_MAX:
        raise ValueError(
            f"integrate=True would solve at {nodes} nodes (at most {INTEGRATE_NODES_MAX}); ask "
            "for fewer n_points, or use fit_laplace(integrate=False) or fit_vb()")
    kept = node_numbers(k_vc, k_fep)
    working = k_vc * k_vc if mode == "dense" else 0  # one node at a time
    mem = int((nodes * kept + working) * itemsize)
    if mem > INTEGRATE_MEM_MAX:
        raise ValueError(
            f"integrate=True would hold {mem / 2 ** 30:.1f} GiB ({nodes} nodes × {kept} "
            f"numbers, and {working} for one node; at most {INTEGRATE_MEM_MAX / 2 ** 30:.0f} "
            "GiB); use fit_laplace(integrate=False) or fit_vb()")
    return nodes
