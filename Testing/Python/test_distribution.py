"""Distribution of disease (zones, central / peripheral, severity score) on synthetic lungs of known lesion layout,
and the three-class category rules on hand-made evidence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from CovidCTScreenLib.lesions.distribution import MIN_ZONE_PCT, distribution, peripheral_region, zone_of_slices, zone_score
from CovidCTScreenLib.screening.verdict import CATEGORIES, category_from_report, study_category

SPACING = (1.0, 1.0, 2.0)


def _lungs(n_right: int = 60, n_left: int = 60):
    """Two box lungs (1 right, 2 left; 60 x 40 px each) over ``n_*`` slices from slice 0 upward."""
    labels = np.zeros((max(n_right, n_left), 80, 110), np.uint8)
    labels[:n_right, 20:60, 5:45], labels[:n_left, 20:60, 65:105] = 1, 2
    return labels


def test_zone_score_table():
    """Francone et al.'s 0-5 bands: 1 < 5 %, 2 5-25 %, 3 26-50 %, 4 51-75 %, 5 > 75 %; 0 below the noise floor."""
    got = [zone_score(p) for p in (0.0, MIN_ZONE_PCT / 2, 1.0, 4.99, 5.0, 25.0, 25.1, 50.0, 50.1, 75.0, 75.1, 100)]
    assert got == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_zones_are_thirds_of_each_lungs_own_extent():
    present = np.zeros(100, bool)
    present[10:70] = True  # 60 slices: 10-29 lower, 30-49 middle, 50-69 upper (index runs inferior -> superior)
    zones = zone_of_slices(present)
    assert (zones[:10] == -1).all() and (zones[70:] == -1).all()
    assert (zones[10:30] == 2).all() and (zones[30:50] == 1).all() and (zones[50:70] == 0).all()


def test_peripheral_region_is_the_outer_third_by_depth():
    lung = np.zeros((50, 50), bool)
    lung[5:45, 5:45] = True  # 40 px square: deepest point 20 px from the border
    rim = peripheral_region(lung, (1.0, 1.0))
    rows, cols = np.arange(50)[:, None], np.arange(50)[None]
    depth = np.minimum(np.minimum(rows - 4, 45 - rows), np.minimum(cols - 4, 45 - cols))  # EDT of a square
    assert rim[lung].sum() == ((depth <= 20 / 3) & lung).sum() and not rim[~lung].any()


def test_bilateral_peripheral_lower_pattern_and_score():
    labels = _lungs()
    lesions = np.zeros_like(labels)
    lesions[:20, 20:60, 5:10] = 1  # lateral rim of each lower zone (5 of 40 px wide): GGO
    lesions[:20, 20:60, 100:105] = 1
    d = distribution(lesions, labels, SPACING)
    json.dumps(d)  # report-ready
    assert d["bilateral"] and d["peripheral_predominant"] and d["lower_zone_predominant"]
    for side in ("right", "left"):
        lower = d["zones"][side]["lower"]
        assert lower["lesion_pct"] == pytest.approx(12.5) and lower["score"] == 2 and lower["central_pct"] == 0
        assert d["zones"][side]["upper"]["score"] == d["zones"][side]["middle"]["score"] == 0
    assert d["severity_score"] == {"total": 4, "max": 30, "definition": d["severity_score"]["definition"]}
    assert "not lobes" in d["severity_score"]["definition"] and "Francone" in d["severity_score"]["definition"]


def test_unilateral_central_upper_lesion():
    labels = _lungs(60, 45)  # the left lung ends lower: zones follow each lung's own extent
    lesions = np.zeros_like(labels)
    lesions[45:60, 35:45, 20:30] = 2  # core of the right upper zone
    d = distribution(lesions, labels, SPACING)
    assert not d["bilateral"] and not d["peripheral_predominant"] and not d["lower_zone_predominant"]
    assert d["per_lung"]["right"]["involved"] and not d["per_lung"]["left"]["involved"]
    upper = d["zones"]["right"]["upper"]
    assert upper["consolidation_pct"] > 0 and upper["peripheral_pct"] == 0 and upper["central_pct"] > 0
    assert d["zones"]["left"]["upper"]["lesion_pct"] == 0


def test_measured_lung_is_the_denominator_and_shapes_are_checked():
    labels = _lungs()
    lesions = np.zeros_like(labels)
    lesions[:, 30:40, 20:30] = 1
    measured = np.zeros(labels.shape, bool)
    measured[:, 25:55, 10:40] = True  # part of the right lung only
    d = distribution(lesions, labels, SPACING, measured)
    assert d["per_lung"]["right"]["lesion_pct"] == pytest.approx(100 * 100 / 900, abs=0.01)
    assert d["per_lung"]["left"]["lesion_pct"] == 0
    with pytest.raises(ValueError):
        distribution(lesions[:-1], labels, SPACING)


def _evidence(ggo, cons, bilateral, peripheral, positive):
    """(binary verdict, manifestations summary, distribution) dicts as a report holds them."""
    binary = {"positive": positive, "positive_slices": 30 if positive else 1, "lung_slices": 100,
              "positive_fraction": 0.3 if positive else 0.01, "min_fraction": 0.05}
    extent = {"ggo_pct": ggo, "consolidation_pct": cons, "ggo_ml": ggo * 40, "consolidation_ml": cons * 40}
    summary = {"lead_method": "learned", "learned": {"per_lung": {"both": extent}},
               "hu_bands": {"per_lung": {"both": extent}}}
    side = {"lesion_pct": ggo + cons}
    spread = {"bilateral": bilateral, "peripheral_predominant": peripheral, "lower_zone_predominant": True,
              "per_lung": {"right": side, "left": side}, "peripheral_vs_central_pct": [2.0, 1.0],
              "severity_score": {"total": 6, "max": 30}}
    return binary, summary, spread


@pytest.mark.parametrize("case, expected, pattern", [
    ((1.5, 0.4, True, True, True), "normal", "negative"),  # within normal limits, even with a positive slice model
    ((3.0, 5.0, True, True, True), "other pneumonia", "atypical"),  # consolidation predominates
    ((10.0, 1.0, True, True, False), "COVID-19", "typical"),  # bilateral peripheral GGO, slice model negative
    ((10.0, 1.0, False, True, False), "COVID-19", "high suspicion"),  # unilateral peripheral GGO: CO-RADS 4
    ((10.0, 1.0, True, False, True), "COVID-19", "indeterminate"),  # central: the slice model decides
    ((10.0, 1.0, True, False, False), "other pneumonia", "indeterminate"),  # central, bilateral
    ((10.0, 1.0, False, False, False), "other pneumonia", "indeterminate"),  # central, unilateral
])
def test_category_rules(case, expected, pattern):
    c = category_from_report(*_evidence(*case))
    assert c["category"] == expected in CATEGORIES and c["pattern"] == pattern
    assert c["reason"].endswith(".") and "RSNA" in c["category_rules"]
    assert all(set(e) == {"finding", "value", "points_to"} for e in c["evidence"])
    assert "probability" not in c["reason"].lower()
    json.dumps(c)


def test_category_lists_the_disagreeing_slice_model():
    binary, summary, spread = _evidence(1.0, 0.1, False, False, True)
    c = study_category(binary, summary["learned"]["per_lung"]["both"], spread, "lesion UNet")
    assert c["category"] == "normal" and "slice model" in c["reason"]
    assert [e["points_to"] for e in c["evidence"][:5]] == ["normal"] * 5  # no pattern read into noise
    assert [e["points_to"] for e in c["evidence"] if e["finding"].startswith("slice model")] == ["COVID-19"]


def test_category_without_the_second_method():
    """When the lesion UNet did not run, the HU bands lead and no second extent is listed."""
    binary, summary, spread = _evidence(10.0, 1.0, True, True, False)
    summary = {"lead_method": "hu_bands", "hu_bands": summary["hu_bands"], "learned": {"not_assessed": "not run"}}
    c = category_from_report(binary, summary, spread)
    assert c["category"] == "COVID-19" and "HU bands" in c["evidence"][0]["finding"]
    assert not any("second method" in e["finding"] for e in c["evidence"])
