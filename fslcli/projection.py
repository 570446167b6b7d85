"""Project embeddings to 2-D or 3-D for plotting.

One pure function, :func:`project`, maps ``(n_points, d)`` embeddings to
``(n_points, dims)`` coordinates with t-SNE (van der Maaten & Hinton, 2008),
UMAP (McInnes et al., 2018) or PCA. The seed is passed in, so the same
embeddings and seed always give the same picture.

Neighbourhood methods need a handful of points to mean anything: with fewer
than three points (or when every point is the same) the result falls back to
PCA, padded with zero columns, instead of failing.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np

# Imported here, not inside project(): threadpool_limits only reaches thread
# pools already loaded, and scikit-learn brings its OpenMP runtime with it.
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from fslcli.errors import FslError

#: Projection methods accepted by :func:`project`.
METHODS: tuple[str, ...] = ("tsne", "umap", "pca")
#: Output dimensionalities accepted by :func:`project`.
DIMS: tuple[int, ...] = (2, 3)

_UMAP_MISSING = "UMAP needs the optional extra: pip install 'fslcli[umap]'"


def project(x: np.ndarray, method: str = "tsne", dims: int = 2, seed: int = 0) -> np.ndarray:
    """Project embeddings to ``dims`` dimensions.

    Args:
        x: embeddings, shape ``(n_points, d)``; any real dtype, must be finite.
        method: ``"tsne"`` (scikit-learn t-SNE, PCA initialisation, perplexity
            ``min(30, (n_points - 1) / 3)`` so it always stays below
            ``n_points``), ``"umap"`` (umap-learn, the optional ``umap`` extra)
            or ``"pca"``.
        dims: 2 or 3.
        seed: random state for UMAP and for t-SNE's random start (t-SNE starts
            from PCA when it has at least ``dims`` points and features, and is
            then deterministic whatever the seed).

    Returns:
        ``float64`` array of shape ``(n_points, dims)``.

    Raises:
        FslError: for an unknown method, unsupported ``dims``, an input that is
            not a non-empty finite 2-D array, or UMAP requested without
            umap-learn installed.
    """
    if method not in METHODS:
        raise FslError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(dims, bool) or dims not in DIMS:
        raise FslError(f"cannot project to {dims!r} dimensions; choose one of {', '.join(map(str, DIMS))}")
    x = _as_points(x)
    n = x.shape[0]

    # Check the optional dependency before any shortcut, so a missing extra is
    # reported the same way whatever the number of points.
    umap = _import_umap() if method == "umap" else None

    if n == 1 or np.all(x == x[0]):
        # No spread to show: every point sits at the origin.
        return np.zeros((n, dims))
    # One thread. OpenMP threads spin at barriers, and on a shared two-core
    # machine t-SNE of 500 points took 10-40 s with two threads against 2 s
    # with one (identical result); an episode's few hundred points gain nothing
    # from threads anyway.
    with threadpool_limits(limits=1):
        if n < 3 or method == "pca":
            return _pca(x, dims)
        if method == "tsne":
            return _tsne(x, dims, seed)
        return _umap(umap, x, dims, seed)


def _as_points(x: np.ndarray) -> np.ndarray:
    """Check and convert ``x`` to a finite ``float64`` array ``(n_points, d)``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise FslError(f"embeddings must be numeric, got {type(x).__name__}: {err}") from None
    if arr.ndim != 2:
        raise FslError(f"embeddings must have shape (n_points, d); got shape {arr.shape}. Stack one embedding per row.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FslError(f"nothing to project: embeddings have shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise FslError(
            f"{bad} of {arr.shape[0]} embeddings contain NaN or infinity; "
            "check the model file or the audio that produced them"
        )
    return arr


def _pad(y: np.ndarray, dims: int) -> np.ndarray:
    """Pad ``y`` with zero columns up to ``dims`` columns."""
    if y.shape[1] >= dims:
        return y[:, :dims]
    return np.hstack([y, np.zeros((y.shape[0], dims - y.shape[1]))])


def _pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Principal components; fewer points or features than ``dims`` are zero-padded."""
    k = min(dims, x.shape[0], x.shape[1])
    # The full SVD is deterministic, and sklearn fixes the component signs.
    y = PCA(n_components=k, svd_solver="full").fit_transform(x)
    return _pad(y, dims)


def _tsne(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """t-SNE with PCA initialisation and a perplexity that fits ``n_points``."""
    n, d = x.shape
    perplexity = min(30.0, max(1.0, (n - 1) / 3))
    # PCA initialisation (stable layouts across runs) needs as many points and
    # features as output dimensions.
    init = "pca" if min(n, d) >= dims else "random"
    tsne = TSNE(n_components=dims, perplexity=perplexity, init=init, random_state=seed)
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def _import_umap() -> ModuleType:
    """Import umap-learn lazily: it is optional and slow to import (numba)."""
    try:
        import umap
    except ImportError:
        raise FslError(_UMAP_MISSING) from None
    return umap


def _umap(umap: ModuleType, x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """UMAP with a neighbourhood that fits ``n_points``."""
    n = x.shape[0]
    # The spectral initialisation needs an eigen-decomposition with more than
    # dims + 1 points; tiny sets start from random positions instead.
    init = "spectral" if n > dims + 2 else "random"
    reducer = umap.UMAP(
        n_components=dims,
        n_neighbors=max(2, min(15, n - 1)),
        init=init,
        random_state=seed,
        n_jobs=1,  # a fixed random_state forces one thread anyway; say so to avoid the warning
    )
    with warnings.catch_warnings():
        # Small sets trigger "n_neighbors is larger than the dataset size" style
        # chatter that the user cannot act on.
        warnings.simplefilter("ignore", UserWarning)
        y = reducer.fit_transform(x)
    return np.asarray(y, dtype=np.float64)
