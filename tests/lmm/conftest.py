import numpy as np
import pytest

from bayesglmm import datasets


@pytest.fixture(scope="session")
def sleep():
    return datasets.load("sleepstudy")


@pytest.fixture(scope="session")
def dietox():
    return datasets.load("dietox")


@pytest.fixture(scope="session")
def penicillin():
    return datasets.load("penicillin")


def dense_deviance(model, theta, reml):
    """−2 log-likelihood from a plain dense multivariate normal, β and σ² profiled out.

    Builds Z (n × Σ L_t q_t) and Λ explicitly, V₀ = I + ZΛΛᵀZᵀ, β̂ by GLS, σ̂² = r²/n (ML) or
    r²/(n−p) (REML), and evaluates scipy's multivariate-normal log-density; REML adds
    log|XᵀV⁻¹X| − p log 2π (Harville 1974).
    """
    import scipy.stats

    d = model.design
    y, X = d.y, d.X
    n, p = X.shape
    zs, lams = [], []
    for t, ti in zip(d.terms, model._theta_index):
        L, q = t.n_levels, t.q
        Z = np.zeros((n, L * q))
        for a in range(q):
            Z[np.arange(n), t.codes * q + a] = t.z[:, a]
        lam = np.where(ti >= 0, np.asarray(theta)[np.maximum(ti, 0)], 0.0)
        zs.append(Z)
        lams.append(np.kron(np.eye(L), lam))
    Z = np.hstack(zs)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    off = 0
    for lam in lams:
        k = lam.shape[0]
        Lam[off : off + k, off : off + k] = lam
        off += k
    ZL = Z @ Lam
    V0 = np.eye(n) + ZL @ ZL.T
    Vi = np.linalg.inv(V0)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = r @ Vi @ r
    s2 = r2 / (n - p if reml else n)
    ll = scipy.stats.multivariate_normal(X @ beta, s2 * V0).logpdf(y)
    dev = -2 * ll
    if reml:
        dev += np.linalg.slogdet(X.T @ Vi @ X / s2)[1] - p * np.log(2 * np.pi)
    return dev
