"""The annotator report (gtcorrect.annotators) on seeded synthetic images with visible objects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gtcorrect.annotators import annotator_report, bias_share
from gtcorrect.boundary import edge_alignment
from gtcorrect.evidence import outline_offset
from tests.gtcorrect.synthetic import make_noisy_set


@pytest.mark.parametrize("r", [2, 4, 6])
def test_outline_offset_measures_a_dilation_in_pixels(r: int) -> None:
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 <= 20**2
    assert outline_offset(disc, disc) == pytest.approx(0.0, abs=0.1)
    grown, shrunk = ndimage.distance_transform_edt(~disc) <= r, ndimage.distance_transform_edt(disc) > r
    assert outline_offset(grown, disc) == pytest.approx(r, abs=0.5)
    assert outline_offset(shrunk, disc) == pytest.approx(-r, abs=0.5)
    assert np.isnan(outline_offset(np.zeros_like(disc), disc))


def test_the_report_names_the_annotator_who_draws_wider_and_off_the_edges() -> None:
    data = make_noisy_set(60, 64, alpha=0.0, seed=2)
    annotators = ["careful"] * 30 + ["wide"] * 30
    given = data.clean.copy()
    given[30:] = np.stack([ndimage.binary_dilation(m, iterations=3) for m in data.clean[30:]])
    # The model learnt from both: about half way (one pixel wider than the truth).
    predicted = np.stack([ndimage.binary_dilation(m, iterations=1) for m in data.clean])
    flagged = np.zeros(60, dtype=bool)
    report = annotator_report(annotators, given, predicted, flagged, 2.0, edge_alignment(data.images, given))
    careful, wide = report
    assert (careful.annotator, wide.annotator) == ("careful", "wide")
    assert wide.relative_offset_px == pytest.approx(6.0, abs=1.2)  # 3 px at 64, images twice as large
    assert wide.suspect and not careful.suspect
    assert "wider than the other annotators" in wide.verdict and "less" in wide.verdict
    assert "narrower" in careful.verdict and "more" in careful.verdict
    assert wide.area_ratio > 1.1 > careful.area_ratio and wide.n_masks == 30


def test_one_annotator_is_judged_against_the_model() -> None:
    data = make_noisy_set(20, 64, alpha=0.0, seed=3)
    given = np.stack([ndimage.binary_erosion(m, iterations=2) for m in data.clean])
    (only,) = annotator_report(["solo"] * 20, given, data.clean, np.ones(20, dtype=bool))
    assert only.relative_offset_px is None and only.suspect and only.n_flagged == 20
    assert "narrower than the model" in only.verdict
    (few,) = annotator_report(["solo"] * 3, given[:3], data.clean[:3], np.zeros(3, dtype=bool))
    assert "too few" in few.verdict and not few.suspect
    with pytest.raises(ValueError, match="same masks"):
        annotator_report(["a"], given, data.clean, np.zeros(20, dtype=bool))


@pytest.mark.parametrize("biased", [1.0, 0.7, 0.3])
def test_bias_share_recovers_the_share_of_biased_masks(biased: float) -> None:
    rng = np.random.default_rng(0)
    n = 400
    k = round(biased * n)
    offsets = np.concatenate([rng.normal(-5.0, 1.0, k), rng.normal(0.0, 1.0, n - k)])
    share, (mean, sd) = bias_share(offsets, (0.0, 1.0))
    assert share == pytest.approx(biased, abs=0.06)
    assert mean == pytest.approx(-5.0, abs=0.3) and sd == pytest.approx(1.0, abs=0.3)
    # No bias at all: the "biased" component lands on the unbiased one, so it tells no mask apart (the
    # share is then meaningless; the annotator report calls nobody suspect in that case).
    _, (mean, sd) = bias_share(rng.normal(0.0, 1.0, n), (0.0, 1.0))
    assert abs(mean) < 0.2 and sd == pytest.approx(1.0, abs=0.2)
