"""User-visible plots of the G stage, rendered to PNG bytes.

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, never ``pyplot``: pyplot keeps global
figure state, which leaks memory and is not thread-safe in a long-running worker.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gtcorrect.types import GmmRound


def _gaussian(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    var = max(var, 1e-12)
    return np.exp(-((x - mean) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


def gmm_histogram_png(round: GmmRound, *, tau: float = 0.5, dpi: int = 100) -> bytes:
    """Histogram of the min-max normalised per-sample losses of one G round with the two weighted
    Gaussian components (clean = low mean, noisy = high mean) and their mixture; PNG bytes.

    ``tau`` is the clean-probability threshold, shown in the legend so that the flagged count reads
    in context.
    """
    counts = np.asarray(round.hist_counts, dtype=np.float64)
    edges = np.asarray(round.hist_edges, dtype=np.float64)
    if edges.size != counts.size + 1:
        raise ValueError(
            f"histogram needs len(edges) == len(counts) + 1, got {edges.size} and {counts.size}."
        )
    fig = Figure(figsize=(6.4, 4.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    widths = np.diff(edges)
    total = counts.sum()
    # Density scale so that the bars and the weighted Gaussian pdfs share one axis.
    density = counts / (total * widths) if total > 0 else counts
    ax.bar(edges[:-1], density, width=widths, align="edge", color="0.75", edgecolor="0.5", label="samples")
    lo, hi = (float(edges[0]), float(edges[-1])) if edges.size else (0.0, 1.0)
    x = np.linspace(lo, hi if hi > lo else lo + 1.0, 400)
    clean = round.weights[0] * _gaussian(x, round.means[0], round.variances[0])
    noisy = round.weights[1] * _gaussian(x, round.means[1], round.variances[1])
    ax.plot(x, clean, color="tab:green", label=f"clean (w={round.weights[0]:.2f}, mu={round.means[0]:.2f})")
    ax.plot(x, noisy, color="tab:red", label=f"noisy (w={round.weights[1]:.2f}, mu={round.means[1]:.2f})")
    ax.plot(x, clean + noisy, color="k", linestyle="--", linewidth=1, label="mixture")
    ax.plot([], [], " ", label=f"flagged {round.n_flagged} (clean prob <= {tau:g})")
    ax.set_xlabel("normalised per-sample loss")
    ax.set_ylabel("density")
    ax.set_title(f"G stage round {round.round}: separation S = {round.separation:.2f}")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
