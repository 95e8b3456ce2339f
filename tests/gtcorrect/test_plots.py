"""G-stage plots render to valid PNGs (gtcorrect.plots)."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from gtcorrect.plots import gmm_caption, gmm_figure, gmm_histogram_png
from gtcorrect.types import GmmRound


def _round(k: int = 2) -> GmmRound:
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(0.2, 0.05, 60), rng.normal(0.7, 0.1, 40)]).clip(0, 1)
    counts, edges = np.histogram(losses, bins=20, range=(0, 1))
    return GmmRound(
        round=k,
        means=(0.2, 0.7),
        variances=(0.0025, 0.01),
        weights=(0.6, 0.4),
        separation=(0.7 - 0.2) / np.sqrt(0.0125),
        hist_counts=tuple(int(c) for c in counts),
        hist_edges=tuple(float(e) for e in edges),
        n_flagged=40,
        n_changed=3,
    )


def test_gmm_histogram_is_a_png_of_sensible_size() -> None:
    data = gmm_histogram_png(_round(), tau=0.5)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    assert img.size == (640, 460)
    assert 5_000 < len(data) < 500_000
    pixels = np.asarray(img.convert("RGB"))
    assert (pixels[..., 1] > pixels[..., 0] + 40).any()  # the green clean component is drawn
    assert (pixels[..., 0] > pixels[..., 1] + 40).any()  # and the red noisy one


def test_empty_histogram_still_renders_and_bad_edges_raise() -> None:
    r = _round(0)
    empty = GmmRound(**{**r.__dict__, "hist_counts": (0,) * 20})
    assert gmm_histogram_png(empty)[:4] == b"\x89PNG"
    bad = GmmRound(**{**r.__dict__, "hist_edges": (0.0, 1.0)})
    with pytest.raises(ValueError, match="len\\(edges\\) == len\\(counts\\) \\+ 1, got 2 and 20"):
        gmm_histogram_png(bad)


def test_a_fit_that_was_not_applied_says_why_and_what_was_flagged_instead() -> None:
    title, flagged = gmm_caption(_round(3), tau=0.5)
    assert title == "Split 3: separation S = 4.47"
    assert flagged == "flagged 40 (clean probability <= 0.5)"
    # A split that flagged 96 % (the right side holds 4 %): not "no two groups" alone, the reason.
    lopsided = replace(_round(3), applied=False, weights=(0.04, 0.96), n_flagged=80, separation=6.45)
    title, flagged = gmm_caption(lopsided, tau=0.5)
    assert title.endswith("; no two groups")
    assert flagged == "the right side holds 4% of the masks: the 80 highest scores flagged instead"
    assert gmm_histogram_png(lopsided)[:4] == b"\x89PNG"


def test_the_legend_sits_under_the_plot_not_on_the_bars() -> None:
    fig = gmm_figure(_round(), tau=0.5)
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0  # entirely below the axes


def test_beta_components_of_the_evidence_detector_render() -> None:
    beta = replace(_round(), distribution="beta", score="detector score, squashed to (0, 1)")
    assert gmm_histogram_png(beta)[:4] == b"\x89PNG"
