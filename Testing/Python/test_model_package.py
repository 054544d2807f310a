"""The shipped model package: verified weights, an honest card, and card figures that reproduce."""

from __future__ import annotations

import shutil

import pytest

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.preprocess import LUNG_WINDOW
from CovidCTScreenLib.model_package import (CARD_NAME, DEFAULT_MODEL, MODELS_DIR, WEIGHTS_NAME, available_models,
                                            load_package)

from conftest import REPO


def test_shipped_model_card():
    assert DEFAULT_MODEL in available_models()
    pkg = load_package()
    card = pkg.card
    assert card["labels"] == ["NonCOVID", "COVID"] and card["positive_label"] == "COVID"
    assert "other pneumonia" in card["unsupported_classes"]
    assert card["input"]["hu_window"] == list(LUNG_WINDOW) and card["input"]["spatial_shape"] == [224, 224]
    # the card says how the model behaves on real HU CT (scripts/domain_gap.py --update-card)
    assert card["hu_ct_check"]["non_covid_volumes"] and card["hu_ct_check"]["covid_hu_slices"]
    assert "test split not used" in card["training"]["test"]
    assert card["calibration"]["temperature"] > 0 and 0 < card["operating_point"]["slice_threshold"] < 1
    assert card["study_rule"]["min_fraction"] == 0.05
    assert (pkg.path / WEIGHTS_NAME).stat().st_size < 25 * 2**20
    resources = sum(f.stat().st_size for f in (REPO / "Resources").rglob("*") if f.is_file())
    assert resources < 80 * 2**20


def test_weights_are_hash_checked(tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(MODELS_DIR / DEFAULT_MODEL, copy)
    data = bytearray((copy / WEIGHTS_NAME).read_bytes())
    data[-10] ^= 0xFF
    (copy / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        load_package(copy)
    with pytest.raises(InputError, match="No model package"):
        load_package(tmp_path / "nowhere")
    (copy / CARD_NAME).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_package(copy)
