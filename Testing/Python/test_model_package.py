"""The shipped model package: verified weights, an honest card, and card figures that reproduce."""

from __future__ import annotations

import shutil

import pytest

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.input.preprocess import LUNG_WINDOW
from CovidCTScreenLib.models.model_package import (CARD_NAME, DEFAULT_MODEL, MODELS_DIR, WEIGHTS_NAME, available_models,
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


def test_card_is_typed_and_validated_at_load(tmp_path):
    """model.json is checked into a typed ModelCard at load: a task field, and every field the code runs on."""
    import json

    from CovidCTScreenLib.models.model_package import LESION_SEGMENTATION, SLICE_CLASSIFICATION, ModelCard

    classifier, lesions = load_package(), load_package("covidct-lesion-unet-v1")
    assert classifier.task == SLICE_CLASSIFICATION and lesions.task == LESION_SEGMENTATION
    info = classifier.info
    assert isinstance(info, ModelCard) and info.labels == ("NonCOVID", "COVID") and info.positive_index == 1
    assert info.input_size == 224 and info.hu_window == LUNG_WINDOW
    assert info.slice_threshold == classifier.card["operating_point"]["slice_threshold"]
    assert lesions.info.input_size == 256 and lesions.info.positive_label is None

    copy = tmp_path / "pkg"
    shutil.copytree(MODELS_DIR / DEFAULT_MODEL, copy)
    card = json.loads((copy / CARD_NAME).read_text())
    for broken, message in ((dict(card, task="detection"), "task 'detection'"),
                            (dict(card, positive_label="Pneumonia"), "positive_label"),
                            (dict(card, operating_point={"slice_threshold": 1.5}), "operating_point.slice_threshold"),
                            ({k: v for k, v in card.items() if k != "input"}, "input.spatial_shape missing")):
        (copy / CARD_NAME).write_text(json.dumps(broken))
        with pytest.raises(InputError, match=message):
            load_package(copy)


def test_available_models_by_task():
    from CovidCTScreenLib.models.model_package import LESION_SEGMENTATION, SLICE_CLASSIFICATION

    assert available_models(task=SLICE_CLASSIFICATION) == [DEFAULT_MODEL]
    assert available_models(task=LESION_SEGMENTATION) == ["covidct-lesion-effunet-v2", "covidct-lesion-unet-v1"]
    assert sorted(available_models()) == sorted(available_models(SLICE_CLASSIFICATION)
                                                + available_models(LESION_SEGMENTATION))


def test_one_card_renderer():
    """card_summary is the one text rendering of a card (CLI, both Slicer modules)."""
    from CovidCTScreenLib.models.model_package import card_summary

    lines = card_summary(load_package().card)
    assert lines[0].startswith(f"Model {DEFAULT_MODEL} (efficientnet-lite0)")
    assert any(line.startswith("Validation at the operating point: auc 0.858") for line in lines)
    assert any("Slice threshold 0.766" in line for line in lines)
    seg = card_summary(load_package("covidct-lesion-unet-v1").card)
    assert any("pooled Dice" in line for line in seg)
