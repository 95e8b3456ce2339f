"""User-visible plots of the G stage, rendered to PNG bytes.

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, never ``pyplot``: pyplot keeps global
figure state, which leaks memory and is not thread-safe in a long-running worker.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gtcorrect.types import GmmRound


def _gaussian(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    var = max(var, 1e-12)
    return np.exp(-((x - mean) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


def _beta(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    """Beta pdf with this mean and variance (method of moments), on x in (0, 1)."""
    var = min(max(var, 1e-9), 0.999 * mean * (1.0 - mean))
    k = mean * (1.0 - mean) / var - 1.0
    a, b = max(mean * k, 1e-3), max((1.0 - mean) * k, 1e-3)
    u = np.clip(x, 1e-6, 1.0 - 1e-6)
    return np.exp(
        (a - 1.0) * np.log(u)
        + (b - 1.0) * np.log1p(-u)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )


def gmm_histogram_png(round: GmmRound, *, tau: float = 0.5, dpi: int = 100) -> bytes:
    """Histogram of one split's scores with its two weighted components (right masks, wrong masks) and
    their mixture; PNG bytes (``gmm_figure``)."""
    buffer = io.BytesIO()
    gmm_figure(round, tau=tau, dpi=dpi).savefig(buffer, format="png")
    return buffer.getvalue()


def gmm_figure(round: GmmRound, *, tau: float = 0.5, dpi: int = 100) -> Figure:
    """The figure of ``gmm_histogram_png``. The components are Gaussians for the loss GMM and betas for
    the evidence detector (``GmmRound.distribution``); the legend sits under the plot so that it hides
    no bar. ``tau`` is the clean-probability threshold, shown in the legend so that the flagged count
    reads in context."""
    counts = np.asarray(round.hist_counts, dtype=np.float64)
    edges = np.asarray(round.hist_edges, dtype=np.float64)
    if edges.size != counts.size + 1:
        raise ValueError(
            f"histogram needs len(edges) == len(counts) + 1, got {edges.size} and {counts.size}."
        )
    fig = Figure(figsize=(6.4, 4.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    widths = np.diff(edges)
    total = counts.sum()
    # Density scale so that the bars and the weighted pdfs share one axis.
    density = counts / (total * widths) if total > 0 else counts
    ax.bar(edges[:-1], density, width=widths, align="edge", color="0.75", edgecolor="0.5", label="masks")
    lo, hi = (float(edges[0]), float(edges[-1])) if edges.size else (0.0, 1.0)
    x = np.linspace(lo, hi if hi > lo else lo + 1.0, 400)
    pdf = _beta if round.distribution == "beta" else _gaussian
    clean = round.weights[0] * pdf(x, round.means[0], round.variances[0])
    noisy = round.weights[1] * pdf(x, round.means[1], round.variances[1])
    ax.plot(x, clean, color="tab:green", label=f"right masks (share {round.weights[0]:.2f})")
    ax.plot(x, noisy, color="tab:red", label=f"wrong masks (share {round.weights[1]:.2f})")
    ax.plot(x, clean + noisy, color="k", linestyle="--", linewidth=1, label="mixture")
    title, flagged = gmm_caption(round, tau)
    ax.plot([], [], " ", label=flagged)
    ax.set_xlabel(round.score)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def gmm_caption(round: GmmRound, tau: float) -> tuple[str, str]:
    """The plot's title and the legend line on what the split flagged. A loss GMM that showed no two
    groups (``applied`` False) says why, and that the masks with the highest scores were flagged instead.
    A job's final verdict is its noise report, not any one round's plot."""
    title = f"Split {round.round}: separation S = {round.separation:.2f}"
    if round.applied:
        return title, f"flagged {round.n_flagged} (clean probability <= {tau:g})"
    share = min(round.weights)
    side = "wrong" if round.weights[1] < round.weights[0] else "right"
    return (
        f"{title}; no two groups",
        f"the {side} side holds {share:.0%} of the masks: the {round.n_flagged} highest scores flagged "
        "instead",
    )


def annotator_offsets_png(
    names: Sequence[str],
    offsets: Sequence[float | None],
    spreads: Sequence[float | None],
    n_masks: Sequence[int],
    suspect: Sequence[bool],
    *,
    dpi: int = 100,
) -> bytes:
    """One bar per annotator: their outlines' mean offset in pixels (+ wider, - narrower; against the
    other annotators where there are several, else against the model) with its standard deviation over
    their masks as a whisker; suspects in red. PNG bytes (``gtcorrect.annotators.annotator_report``)."""
    n = len(names)
    fig = Figure(figsize=(6.4, max(2.2, 0.9 + 0.45 * n)), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    values = np.array([np.nan if o is None else o for o in offsets], dtype=np.float64)
    errors = np.array([0.0 if s is None else s for s in spreads], dtype=np.float64)
    colors = ["tab:red" if s else "tab:blue" for s in suspect]
    ax.barh(y, np.nan_to_num(values), xerr=errors, color=colors, alpha=0.8, capsize=3)
    ax.axvline(0.0, color="k", linewidth=1)
    labels = [
        f"{name} ({k} masks): " + ("n/a" if not np.isfinite(v) else f"{v:+.1f} px")
        for name, k, v in zip(names, n_masks, values, strict=True)
    ]
    ax.set_yticks(y, labels)
    ax.set_xlabel("outline offset, px (+ wider, - narrower; whisker: spread)")
    ax.set_title("Annotators' outlines (red: suspect of a bias)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
