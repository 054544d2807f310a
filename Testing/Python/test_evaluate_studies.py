"""covidct-evaluate on a real CT volume with radiologists' slice labels (COVID-CT-MD cap002, CAP): study level,
three-class category and per-slice AUC of each score against the labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import DATA
from CovidCTScreenLib.evaluation.evaluate import evaluate_to_folder
from CovidCTScreenLib.evaluation.evaluate_studies import SLICE_SCORES, slice_auc

MD = DATA / "covid-ct-md"
CAP = MD / "Cap subjects" / "cap002"


def test_slice_auc_block_bootstrap():
    y = np.r_[np.zeros(30, bool), np.ones(30, bool)]
    perfect = slice_auc(y, y.astype(float), np.arange(60) // 5, 200)
    assert perfect["value"] == 1.0 and perfect["ci95"] == [1.0, 1.0]
    noise = slice_auc(y, np.random.default_rng(0).random(60), np.arange(60) // 5, 200)
    assert noise["ci95"][0] < 0.5 < noise["ci95"][1]


@pytest.mark.slow
def test_cap_volume_with_slice_labels(tmp_path):
    import pydicom

    labels = np.load(MD / "Slice-level-labels-updated-1.npy")[56]  # Index.csv row of cap002
    files = sorted(CAP.glob("IM*.dcm"))
    with open(tmp_path / "cap002_slices.csv", "w") as f:  # z,label: label index i = file IM{i+1:04d}.dcm
        f.write("z,label\n")
        for i, path in enumerate(files):
            assert path.name == f"IM{i + 1:04d}.dcm"
            z = float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])
            f.write(f"{z},{labels[i]}\n")
    lst = tmp_path / "studies.csv"
    lst.write_text(f"study,label,patient_id,slice_labels\n{CAP},CAP,cap002,cap002_slices.csv\n")
    out = tmp_path / "out"
    evaluate_to_folder(lst, out, device="cpu", resamples=200)
    doc = json.loads((out / "metrics.json").read_text())
    s = doc["slice_level"]["studies"]["cap002"]
    assert s["infected"] + s["infected_outside_lung_slices"] == int(labels.sum()) == 15
    for key in SLICE_SCORES:
        auc = s["auc"][key]
        assert 0 <= auc["value"] <= 1 and auc["ci95"][0] <= auc["value"] <= auc["ci95"][1]
    tc = doc["three_class"]
    assert tc["studies"] == 1 and sum(tc["matrix"][1]) == 1  # truth row "other pneumonia"
    with open(out / "slice_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == s["lung_slices"] and sum(r["label"] == "1" for r in rows) == s["infected"]
    with open(out / "predictions.csv") as f:
        study = next(csv.DictReader(f))
    assert study["category"] in ("COVID-19", "other pneumonia", "normal") and study["reason"]
    assert (out / "slices_cap002.png").is_file() and doc["files"]["slice_predictions"] == "slice_predictions.csv"


def test_lung_level_against_lobe_labels():
    """Per lung: labelled vs measured involvement and the per-slice AUC of each lesion method."""
    from CovidCTScreenLib.evaluation.evaluate_studies import lung_level

    y_left = np.r_[np.zeros(20, np.int8), np.ones(20, np.int8)]
    lesion_left = y_left * 5.0 + np.linspace(0, 1, 40)
    s = {"per_lung": {"left": {"slice_labels": y_left, "scores": {"hu_bands": lesion_left, "learned": lesion_left}},
                      "right": {"slice_labels": np.zeros(40, np.int8),
                                "scores": {"hu_bands": np.ones(40), "learned": np.zeros(40)}}},
         "distribution": {"per_lung": {"left": {"involved": True}, "right": {"involved": True}}}}
    out = lung_level(s, np.arange(40) // 5, np.ones(40, bool), 100)
    assert out["left"]["infected"] == 20 and out["left"]["labelled_involved"]
    assert out["left"]["auc"]["learned"]["value"] == 1
    assert not out["right"]["labelled_involved"] and out["right"]["measured_involved"]  # a false bilateral call shows
    assert np.isnan(out["right"]["auc"]["learned"]["value"])  # no infected slice in that lung: AUC undefined
