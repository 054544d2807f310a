"""The Slicer modules' non-GUI helpers (CovidCTScreenLib.slicer_glue), tested without Slicer."""

from __future__ import annotations

import json

from CovidCTScreenLib.models.model_package import DEFAULT_MODEL, MODELS_DIR
from CovidCTScreenLib.slicer_glue.requirements import missing_requirements
from CovidCTScreenLib.slicer_glue.texts import category_html, manifestations_html, model_card_html


def test_missing_requirements(tmp_path):
    req = tmp_path / "r.txt"
    req.write_text("# comment\npytest>=1.0\npytest>=999.0\nno-such-package-xyz>=1\n\n")
    assert missing_requirements(req) == ["pytest>=999.0", "no-such-package-xyz>=1"]


def test_model_card_html_reads_the_card(tmp_path):
    card = tmp_path / "m"
    card.mkdir()
    (card / "model.json").write_text('{"name": "m", "architecture": "a", "task": "t", "training": {"train": "T1", '
                                     '"method": "M"}, "validation": {"split": "V1", '
                                     '"at_0.5": {"auc": 0.9, "f1": 0.8}}}')
    html = model_card_html(str(card))
    assert "T1" in html and "V1" in html and "auc 0.900" in html and "f1 0.800" in html
    assert "not found" in model_card_html(str(tmp_path / "nothing"))
    shipped = json.loads((MODELS_DIR / DEFAULT_MODEL / "model.json").read_text())
    assert shipped["validation"]["split"] in model_card_html()


def test_category_html_shows_category_reason_and_evidence():
    verdict = {"category": "other pneumonia", "pattern": "atypical", "reason": "Consolidation predominates.",
               "evidence": [{"finding": "dominant manifestation", "value": "consolidation",
                             "points_to": "other pneumonia"}]}
    html = category_html(verdict)
    assert "other pneumonia" in html and "Consolidation predominates." in html and "<li>dominant manifestation" in html
    assert "not a probability" in html
    assert category_html({"category": None}) == ""


def test_manifestations_html_names_both_methods():
    extent = {"per_lung": {"both": {"ggo_pct": 12.34, "consolidation_pct": 1.5}}, "dominant": "GGO"}
    m = {"hu_bands": extent, "learned": extent, "possible_fibrotic_streaks": {"candidates": 3}, "caution": "C!"}
    html = manifestations_html(m)
    assert "HU bands: GGO 12.3 %" in html and "lesion UNet" in html and "3 candidates" in html and "C!" in html
    assert manifestations_html({}) == ""
