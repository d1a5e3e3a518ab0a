"""2-D embeddings of feature vectors for scatter plots."""
from __future__ import annotations

import numpy as np


def tsne_2d(features: np.ndarray, seed: int = 0, iterations: int = 500, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE (scikit-learn, Barnes-Hut, one thread: deterministic for a seed) of ``features`` (N, D)
    -> (N, 2), after PCA to 50 dimensions -- the usual t-SNE preprocessing, and distances in a few
    thousand dimensions would be slow. Needs N > ``perplexity``."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    reduced = PCA(n_components=min(50, *features.shape), random_state=seed).fit_transform(features)
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity, max_iter=iterations,
                n_jobs=1).fit_transform(reduced)
