"""The shared preprocessing path and the metrics implementation, on known values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from CovidCTScreenLib.models.calibration import softmax
from CovidCTScreenLib.evaluation.metrics import binary_metrics, roc_auc, youden_threshold
from CovidCTScreenLib.input.preprocess import (INPUT_SIZE, LUNG_WINDOW, image_to_unit, lung_box, prepare_hu_slice,
                                         prepare_image, window_hu)
from CovidCTScreenLib.input.volume_io import read_dicom_slice

from conftest import COVID_CT, COVID_HU


def test_lung_window_mapping():
    lo, hi = LUNG_WINDOW
    assert window_hu(np.array([lo, hi, (lo + hi) / 2, -3024, 3000])).tolist() == pytest.approx([0, 1, 0.5, 0, 1])


def test_training_images_and_hu_slices_share_range():
    """A real 8-bit COVID-CT figure and a real HU COVID slice both become 224x224 float32 in [0, 1]."""
    img = np.asarray(Image.open(sorted((COVID_CT / "CT_COVID").iterdir())[0]))
    x = prepare_image(img)
    assert x.shape == (INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    hu, _ = read_dicom_slice(COVID_HU / "A002304_19010112-135.dcm")
    y = prepare_hu_slice(hu[0], (slice(100, 400), slice(50, 460)))
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    # air maps to black, soft tissue to near white, as in the lung-window figures
    assert window_hu(np.array([-1000.0]))[0] < 0.25 and window_hu(np.array([40.0]))[0] > 0.9


def test_rgb_to_grey_and_box():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    assert image_to_unit(rgb)[0, 0] == pytest.approx(0.299)
    m = np.zeros((100, 200), bool)
    m[20:60, 50:150] = True
    rows, cols = lung_box(m, margin=0.1)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (16, 64, 40, 160)
    assert lung_box(np.zeros((5, 5), bool)) is None


def test_auc_known_values():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.3)) == 0.5
    # hand computed: pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) -> 3/4
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert np.isnan(roc_auc(np.ones(3), np.arange(3)))


def test_binary_metrics_hand_case():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.7, 0.2, 0.6, 0.1, 0.3, 0.2, 0.55])
    m = binary_metrics(y, s, threshold=0.5)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 3)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.75 and m["ppv"] == 0.75 and m["npv"] == 0.75
    assert m["f1"] == 0.75 and m["accuracy"] == 0.75
    # J = sens + spec - 1 is 0.5 at 0.7 (2/4, 4/4) and at 0.55 (3/4, 3/4), lower elsewhere: the higher one wins,
    # placed midway to the next lower score (0.6) so that no score lies on it
    assert youden_threshold(y, s) == pytest.approx(0.65, abs=1e-12)
    assert binary_metrics(y, s, youden_threshold(y, s))["tp"] == binary_metrics(y, s, 0.7)["tp"]


def test_softmax_temperature():
    p = softmax(np.array([[2.0, 0.0]]), temperature=2.0)
    assert p[0, 0] == pytest.approx(np.exp(1) / (np.exp(1) + 1))
    assert p.sum() == pytest.approx(1.0)


def test_bootstrap_ci_contains_estimate_and_groups_matter():
    from CovidCTScreenLib.evaluation.metrics import bootstrap_ci

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1] * 10, 5)  # 20 patients of 5 correlated slices each
    s = np.repeat(rng.normal(size=20), 5) + y * 0.8 + rng.normal(scale=0.1, size=100)
    auc = roc_auc(y, s)
    lo_img, hi_img = bootstrap_ci(y, s, n=500)
    lo_pat, hi_pat = bootstrap_ci(y, s, groups=np.repeat(np.arange(20), 5), n=500)
    assert lo_img <= auc <= hi_img and lo_pat <= auc <= hi_pat
    assert (hi_pat - lo_pat) > 1.3 * (hi_img - lo_img)  # repeated slices: patients carry less information
    assert bootstrap_ci(y, (y == 1).astype(float), n=50) == (1.0, 1.0)


def test_verdict_flags_low_confidence_near_the_rule():
    """A study whose positive-slice fraction sits near the 5 % rule, or with few lung slices, is flagged for
    careful reading; a clearly negative or clearly positive study is not."""
    from CovidCTScreenLib.screening.verdict import study_verdict

    k = np.arange(60)
    clear_neg = study_verdict(k, np.full(60, 0.1), 0.5, 0.05)
    clear_pos = study_verdict(k, np.where(k < 30, 0.9, 0.1), 0.5, 0.05)
    near = study_verdict(k, np.where(k < 4, 0.9, 0.1), 0.5, 0.05)  # 4/60 = 6.7 %: positive, but barely
    few = study_verdict(k[:5], np.full(5, 0.1), 0.5, 0.05)
    assert not clear_neg.low_confidence and not clear_pos.low_confidence
    assert near.positive and near.low_confidence and near.fraction_95ci[0] <= 0.05 < near.fraction_95ci[1]
    assert few.low_confidence and "only 5 lung slices" in few.confidence_note
    assert clear_pos.fraction_95ci[0] <= clear_pos.positive_fraction <= clear_pos.fraction_95ci[1]
