"""covidct-evaluate on real data: the COVID-CT val split, real CT studies, Inf-Net lesion masks; metrics on
known values; bad input refused with nothing written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COVID_CT, DATA, DICOM_SERIES, NIFTI_CT, mini_class_folder, tree_digest

from CovidCTScreenLib.errors import Cancelled, InputError
from CovidCTScreenLib.evaluation.evaluate import binary_section, detect_data, evaluate, evaluate_to_folder
from CovidCTScreenLib.evaluation.evaluate_segmentation import segmentation_section
from CovidCTScreenLib.evaluation.metrics import calibration_bins, overlap_metrics, roc_auc
from CovidCTScreenLib.models.model_package import load_package
from CovidCTTrainingLib.data import write_covid_ct_split_csv

INFNET_MULTICLASS = DATA / "infnet-semiseg" / "multiclass"


@pytest.fixture(scope="module")
def val_csv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lists") / "val.csv"
    assert write_covid_ct_split_csv(COVID_CT, "val", out) == 118
    return out


@pytest.fixture(scope="module")
def val_run(val_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "val"
    return evaluate_to_folder(val_csv, out, model=None, device="cpu", thresholds=(0.5,)), out


def _val_labels_patients(val_csv):
    with open(val_csv) as f:
        rows = list(csv.DictReader(f))
    return np.array([r["label"] == "COVID" for r in rows]), np.array([r["patient_id"] for r in rows])


def test_hand_computed_case_exact():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    s = np.array([0.9, 0.7, 0.2, 0.6, 0.1, 0.3, 0.2, 0.55])
    sec = binary_section(y, s, s >= 0.5, np.arange(8), resamples=200)
    assert (sec["tp"], sec["fn"], sec["fp"], sec["tn"]) == (3, 1, 1, 3)
    for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"):
        assert sec[k]["value"] == 0.75
    assert sec["auc"]["value"] == 12.5 / 16  # pairs (pos > neg): 0.9 4/4, 0.7 4/4, 0.55 3/4, 0.2 1.5/4 (a tie)
    # ECE by hand: bins [0.1,0.2)->{0.1}, [0.2,0.3)->{0.2,0.2}, [0.3,0.4)->{0.3}, [0.5,0.6)->{0.55},
    # [0.6,0.7)->{0.6}, [0.7,0.8)->{0.7}, [0.9,1]->{0.9}
    gaps = [0.1 - 0, 2 * abs(0.2 - 0.5), 0.3, 1 - 0.55, 0.6, 1 - 0.7, 1 - 0.9]
    assert calibration_bins(y, s)["ece"] == pytest.approx(sum(gaps) / 8)
    t = np.zeros((4, 4), bool)
    t[:2, :2] = True
    p = np.zeros((4, 4), bool)
    p[:2, :3] = True
    m = overlap_metrics(t, p)
    assert (m["dice"], m["iou"], m["area_error"]) == (2 * 4 / 10, 4 / 6, 0.5)
    assert np.isnan(overlap_metrics(np.zeros(3), np.zeros(3))["dice"])


def test_perfect_and_constant_predictors_on_real_val_labels(val_csv):
    y, patients = _val_labels_patients(val_csv)
    perfect = binary_section(y, y.astype(float), y, patients, resamples=300)
    assert perfect["auc"]["value"] == 1.0 and perfect["auc"]["ci95"] == [1.0, 1.0]
    assert perfect["accuracy"]["value"] == 1.0 and perfect["f1"]["value"] == 1.0
    constant = binary_section(y, np.full(len(y), 0.3), np.zeros(len(y), bool), patients, resamples=300)
    assert constant["auc"]["value"] == 0.5 and constant["sensitivity"]["value"] == 0.0
    assert constant["specificity"]["value"] == 1.0 and np.isnan(constant["ppv"]["value"])


def test_perfect_segmentation_on_real_infnet_masks():
    from CovidCTScreenLib.input.datasets import read_lesion_mask, segmentation_pairs

    truths = [read_lesion_mask(m) for _, m in segmentation_pairs(INFNET_MULTICLASS)]
    assert {v for t in truths for v in np.unique(t)} == {0, 1, 2}
    summary, per_image = segmentation_section(truths, truths, resamples=100)
    for name in ("ggo", "consolidation", "infection"):
        assert summary[name]["dice"]["value"] == 1.0 and summary[name]["pooled_dice"] == 1.0
        assert summary[name]["mean_abs_area_error"] == 0.0
    empty = [np.zeros_like(t) for t in truths]
    assert segmentation_section(truths, empty, resamples=100)[0]["infection"]["dice"]["value"] == 0.0


def test_operating_point_between_val_scores(val_run):
    """The shipped threshold was exactly one val image's score (0.7665035), so float rounding flipped that image
    and the card's sensitivity (0.65) came back as 0.633. It now lies midway between two val scores: every val
    decision survives noise far larger than float rounding."""
    from CovidCTScreenLib.evaluation.metrics import between_scores, binary_metrics

    result, _ = val_run
    card = load_package().card
    threshold, truth, score = card["operating_point"]["slice_threshold"], result.curves["truth"], result.curves["score"]
    assert np.abs(score - threshold).min() > 1e-4
    assert between_scores(score, threshold) == pytest.approx(threshold, abs=1e-6)  # placed by the rule itself
    counts = [{k: binary_metrics(truth, score + noise, threshold)[k] for k in ("tp", "fp", "tn", "fn")}
              for noise in (-1e-6, 0.0, 1e-6)]
    recorded = card["validation"]["at_operating_point"]
    assert counts == [{k: recorded[k] for k in ("tp", "fp", "tn", "fn")}] * 3


def test_patient_bootstrap_differs_from_image_bootstrap(val_run, val_csv):
    result, _ = val_run
    y, patients = _val_labels_patients(val_csv)
    assert len(set(patients)) < len(patients)  # COVID-CT val: 118 images of 56 patients
    score = result.curves["score"]
    by_patient = binary_section(y, score, score >= 0.5, patients, resamples=1000)
    by_image = binary_section(y, score, score >= 0.5, np.arange(len(y)), resamples=1000)
    assert by_patient["auc"]["ci95"] != by_image["auc"]["ci95"]
    width = {k: np.diff(s["auc"]["ci95"])[0] for k, s in (("p", by_patient), ("i", by_image))}
    assert width["p"] > width["i"]  # slices of one patient are not independent
    assert result.document["data"]["bootstrap_unit"] == "patients"


@pytest.mark.slow
def test_val_split_reproduces_the_model_card(val_run):
    """The shipped model on COVID-CT val: the card's figures come back through covidct-evaluate, every CI holds
    its point value, and the files a person reads are there."""
    result, out = val_run
    card = load_package().card
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["schema"] == "covidctscreen.evaluation" and doc["schema_version"] == 1
    assert doc["model"]["weights_sha256"] == card["weights_sha256"]
    assert doc["data"]["per_class"] == {"NonCOVID": 58, "COVID": 60} and doc["data"]["patients"] == 56
    op, half = doc["results"]["operating_point"], doc["results"]["threshold_0.5"]
    assert doc["thresholds"]["operating_point"] == card["operating_point"]["slice_threshold"]
    # Tolerant to float noise, not to a real change: the confusion matrices must come back exactly (the
    # operating point lies between val scores, see test_operating_point_between_val_scores); a real change moves
    # the AUC by at least 1 / (60 x 58) = 2.9e-4, far beyond 1e-6.
    for section, recorded in ((op, card["validation"]["at_operating_point"]), (half, card["validation"]["at_0.5"])):
        assert {k: section[k] for k in ("tp", "fp", "tn", "fn")} == {k: recorded[k] for k in ("tp", "fp", "tn", "fn")}
        for key in ("sensitivity", "specificity", "f1", "accuracy"):
            assert section[key]["value"] == pytest.approx(recorded[key], abs=1e-12)
    assert op["auc"]["value"] == pytest.approx(card["validation"]["at_0.5"]["auc"], abs=1e-6)
    assert op["auc"]["ci95"] == pytest.approx(card["validation"]["auc_95ci"], abs=1e-6)
    for section in (op, half):
        for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc"):
            lo, hi = section[key]["ci95"]
            assert lo <= section[key]["value"] <= hi, key
    assert sum(map(sum, op["confusion_matrix"]["matrix"])) == 118
    # the shipped model against the plain EfficientNet-Lite0 baseline (val AUC 0.855, F1 0.76): the card says
    # "on par": AUC above it, F1 above it at the operating point (0.758 at 0.5, 0.002 below)
    assert op["auc"]["value"] > 0.855 and op["f1"]["value"] > 0.76
    assert 0 <= doc["calibration"]["ece"] <= 1 and sum(doc["calibration"]["count"]) == 118
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 118 and {"p_COVID", "p_NonCOVID", "predicted_at_operating_point"} <= set(rows[0])
    for png in ("roc.png", "reliability.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*partial*"))


@pytest.mark.slow
def test_lesion_model_card_dice_reproduces(tmp_path):
    """The shipped lesion model on its own held-out Inf-Net slices: covidct-evaluate gives back the card's Dice."""
    card = load_package("covidct-lesion-unet-v1").card
    data = tmp_path / "held-out"
    for sub, suffix in (("images", ".jpg"), ("masks", ".png")):
        (data / sub).mkdir(parents=True)
        for k in card["validation"]["slices"]:
            (data / sub / f"{k}{suffix}").symlink_to(INFNET_MULTICLASS / sub / f"{k}{suffix}")
    assert detect_data(data) == ("segmentation", data)
    out = tmp_path / "out"
    result = evaluate_to_folder(data, out, model="covidct-lesion-unet-v1", device="cpu", resamples=200)
    scores = card["validation"]["scores"]
    for ours, theirs in (("ggo", "ggo"), ("consolidation", "consolidation"), ("infection", "lesion")):
        r = result.document["results"][ours]
        assert r["pooled_dice"] == pytest.approx(scores[theirs]["dice_pooled"], abs=1e-9)
        assert r["dice"]["value"] == pytest.approx(scores[theirs]["dice_mean_per_slice"], abs=1e-9)
        assert r["dice"]["ci95"][0] <= r["dice"]["value"] <= r["dice"]["ci95"][1]
    assert (out / "cases.png").read_bytes()[:4] == b"\x89PNG" and len(result.rows) == 10


def test_class_folder_input_and_input_untouched(tmp_path):
    """A class-per-folder set (CT_COVID/, CT_NonCOVID/) is detected; images are each their own patient."""
    data = mini_class_folder(tmp_path / "set", 4)
    before = tree_digest(data)
    assert detect_data(data) == ("slices", data)
    result = evaluate(data, device="cpu", resamples=100)
    assert result.document["data"]["per_class"] == {"NonCOVID": 4, "COVID": 4}
    assert result.document["data"]["bootstrap_unit"] == "images"
    assert tree_digest(data) == before


def test_worker_evaluates_with_progress_and_cancels(tmp_path):
    """The out-of-process worker the Slicer module runs: progress lines, results folder; cancel leaves nothing."""
    from CovidCTScreenLib.app import worker

    data = mini_class_folder(tmp_path / "set", 3)
    events = []
    code, message = worker.run(data, tmp_path / "res", progress=lambda s, f: events.append((s, f)), device="cpu",
                               evaluate=True, thresholds=(0.5,))
    assert code == worker.EXIT_OK, message
    doc = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert set(doc["thresholds"]) == {"operating_point", "threshold_0.5"} and doc["data"]["items"] == 6
    fractions = [f for _, f in events]
    assert {"load", "inference", "metrics"} <= {s for s, _ in events} and fractions == sorted(fractions)
    code, _ = worker.run(data, tmp_path / "res2", cancel=lambda: True, device="cpu", evaluate=True)
    assert code == worker.EXIT_CANCELLED and not (tmp_path / "res2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res2")]


@pytest.mark.slow
def test_studies_with_one_unreadable(tmp_path):
    """Studies go through the screening pipeline and its study rule; a broken study is listed, not scored.
    Both real volumes here are non-COVID, so AUC is undefined (null) and the specificity is what counts."""
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(NIFTI_CT.read_bytes()[:5000])
    lst = tmp_path / "studies.csv"
    lst.write_text(f"study,label\n{DICOM_SERIES},NonCOVID\n{NIFTI_CT},NonCOVID\nbroken.nii.gz,NonCOVID\n")
    assert detect_data(tmp_path) == ("studies", lst)
    out = tmp_path / "out"
    result = evaluate_to_folder(tmp_path, out, device="cpu", resamples=100)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["data"]["items"] == 2 and len(doc["data"]["failed"]) == 1
    op = doc["results"]["operating_point"]
    assert op["auc"]["value"] is None and op["tn"] + op["fp"] == 2
    assert op["specificity"]["value"] == op["tn"] / 2
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[2]["error"]
    assert result.rows[0]["verdict_at_operating_point"] in ("COVID-19", "no COVID-19 pattern")


def test_bad_inputs_refused_nothing_written(tmp_path, val_csv):
    out = tmp_path / "out"
    bad_label = tmp_path / "bad.csv"
    bad_label.write_text("path,label\n" + str(next((COVID_CT / "CT_COVID").iterdir())) + ",pneumonia\n")
    not_csv = tmp_path / "list.csv"
    not_csv.write_text("file,class\nx.png,COVID\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(bad_label, "not one of the model's labels"), (not_csv, "header"), (empty, "not a labelled data set"),
             (tmp_path / "missing", "does not exist"), (INFNET_MULTICLASS, "needs a lesion-segmentation model")]
    for data, message in cases:
        with pytest.raises(InputError, match=message):
            evaluate_to_folder(data, out, device="cpu")
        assert not out.exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(Cancelled):
        evaluate_to_folder(val_csv, out, device="cpu", cancel=lambda: True)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_cli_exit_codes(tmp_path):
    """One line and exit 2 on bad input; an existing non-empty output folder is not overwritten."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    run = subprocess.run([sys.executable, "-m", "CovidCTScreenLib.app.evaluate_cli", str(tmp_path / "nothing"),
                          "--out", str(tmp_path / "o2"), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 2 and "does not exist" in run.stderr and not (tmp_path / "o2").exists()
    run = subprocess.run([sys.executable, "-m", "CovidCTScreenLib.app.evaluate_cli", str(INFNET_MULTICLASS),
                          "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 2 and "not empty" in run.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_roc_auc_matches_pairwise_definition_on_real_scores(val_run, val_csv):
    """The rank-based AUC equals the plain pairwise count (ties count 1/2) on the real val scores."""
    y, _ = _val_labels_patients(val_csv)
    s = val_run[0].curves["score"]
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    pairwise = wins / (y.sum() * (~y).sum())
    assert roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
