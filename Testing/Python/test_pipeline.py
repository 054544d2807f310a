"""End to end on the shipped sample CT with the shipped model: report content, geometry, CLI, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from CovidCTScreenLib.models.model_package import DEFAULT_MODEL, load_package
from CovidCTScreenLib.screening.pipeline import screen_to_folder
from CovidCTScreenLib.report.report import SCHEMA_VERSION

from conftest import DICOM_SERIES, SAMPLE_CT, tree_digest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "report"
    before = tree_digest(SAMPLE_CT)
    stages = []
    result = screen_to_folder(SAMPLE_CT, out, device="cpu", progress=lambda s, f: stages.append((s, f)))
    assert tree_digest(SAMPLE_CT) == before  # the input is never modified
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    return out, result


def test_report_files_and_schema(report_dir):
    out, result = report_dir
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "slice_scores.csv", "lung_mask.nrrd", "heatmap.nrrd", "slice_scores.png"} <= names
    assert len([n for n in names if n.startswith("key_slice_")]) == 5
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema_version"] == SCHEMA_VERSION and "RESEARCH USE ONLY" in rep["notice"]
    assert rep["model"]["name"] == DEFAULT_MODEL
    assert rep["model"]["weights_sha256"] == load_package().card["weights_sha256"]
    assert rep["verdict"]["lung_slices"] == len(rep["slices"]) == len(result.slice_indices)
    assert 2000 < rep["lungs"]["volume_ml"]["total"] < 8000
    # the binary model must not print probabilities for classes it never learned
    assert set(rep["slices"][0]["probabilities"]) == {"COVID-19", "non-COVID-19"}
    assert {"other pneumonia", "normal"} <= set(rep["not_assessed"])
    probs = np.array([s["probabilities"]["COVID-19"] for s in rep["slices"]])
    assert ((probs >= 0) & (probs <= 1)).all()
    keys = rep["key_slices"]  # by evidence, spread over the lungs (test_report_outputs.py); NRRD: no instance numbers
    assert [k["probability"] for k in keys] == [round(float(probs[result.slice_indices.tolist().index(k["slice"])]), 4)
                                                for k in keys]
    assert all(k["instance_number"] is None and k["name"].startswith(f"slice {k['slice']} (z ") for k in keys)
    frac = float((probs >= rep["verdict"]["slice_threshold"]).mean())
    assert rep["verdict"]["positive"] == (frac > rep["verdict"]["min_fraction"])
    for key in ("load_s", "lung_mask_s", "inference_s", "gradcam_s"):
        assert rep["timings_s"][key] >= 0
    csv_lines = (out / "slice_scores.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rep["slices"])


def test_outputs_align_with_input(report_dir):
    out, result = report_dir
    ct = sitk.ReadImage(str(SAMPLE_CT))
    for name in ("lung_mask.nrrd", "heatmap.nrrd", "lesions_hu_bands.nrrd", "lesions_learned.nrrd",
                 "fibrotic_streak_candidates.nrrd"):
        img = sitk.ReadImage(str(out / name))
        assert img.GetSize() == ct.GetSize()
        assert np.allclose(img.GetSpacing(), ct.GetSpacing()) and np.allclose(img.GetOrigin(), ct.GetOrigin())
        assert np.allclose(img.GetDirection(), ct.GetDirection())
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "heatmap.nrrd")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_mask.nrrd")))
    assert heat.min() >= 0 and heat.max() <= 1
    assert heat[labels == 0].max() == 0  # heat only inside the lungs
    k = result.verdict.top_slices[0]["slice"]
    assert heat[k].max() > 0
    assert set(np.unique(labels)) == {0, 1, 2}


def test_heatmap_file_points_where_the_raw_cam_is_high(report_dir):
    """heatmap.nrrd (what Slicer, the key slices and the HTML show) follows an independent raw Grad-CAM
    (MONAI, no post-processing) on the top slice; the former inverted map correlated at -1."""
    import torch
    from monai.visualize import GradCAM

    from CovidCTScreenLib.models.inference import lung_slices
    from CovidCTScreenLib.models.networks import gradcam_layer
    from CovidCTScreenLib.models.explain import resize_map

    out, result = report_dir
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "heatmap.nrrd")))
    package, lungs = result.model, result.mask.lungs
    slices = lung_slices(result.volume.hu, lungs, result.volume.spacing)
    k = result.verdict.top_slices[0]["slice"]
    x = torch.from_numpy(slices.images[list(slices.indices).index(k)])[None, None]
    raw = GradCAM(package.build("cpu"), gradcam_layer(package.card["architecture"]), upsampler=lambda s: lambda m: m,
                  postprocessing=lambda m: m)(x, class_idx=package.positive_index)[0, 0].detach().numpy()
    box = slices.box
    raw = resize_map(raw, (box[0].stop - box[0].start, box[1].stop - box[1].start))
    inside = lungs[k, box[0], box[1]]
    assert np.corrcoef(heat[k, box[0], box[1]][inside], raw[inside])[0, 1] > 0.95


def test_cli_ok_and_refusals(tmp_path):
    exe = [sys.executable, "-m", "CovidCTScreenLib.app.cli"]
    ok = subprocess.run(exe + [str(SAMPLE_CT), "--out", str(tmp_path / "r"), "--device", "cpu", "--quiet",
                               "--no-heatmap"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Research use only" in ok.stdout and (tmp_path / "r" / "report.json").is_file()
    again = subprocess.run(exe + [str(SAMPLE_CT), "--out", str(tmp_path / "r"), "--quiet"], capture_output=True,
                           text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
    one = tmp_path / "one_slice"
    one.mkdir()
    shutil.copy(sorted(DICOM_SERIES.glob("*.dcm"))[5], one)
    bad = subprocess.run(exe + [str(one), "--out", str(tmp_path / "bad"), "--quiet"], capture_output=True, text=True)
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("covidct-screen: error:") and "slice" in errors[0]
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))


def test_manifestations_side_by_side(report_dir):
    """GGO / consolidation extent by HU bands and by the lesion UNet, per lung, from the files written; possible
    fibrotic streaks with their limits. The sample is a lung-cancer patient: figures are measured, not judged."""
    out, result = report_dir
    m = json.loads((out / "report.json").read_text())["manifestations"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_mask.nrrd")))
    voxel_ml = float(np.prod(result.volume.spacing)) / 1000
    for key, name in (("hu_bands", "lesions_hu_bands.nrrd"), ("learned", "lesions_learned.nrrd")):
        lesions = sitk.GetArrayFromImage(sitk.ReadImage(str(out / name)))
        assert set(np.unique(lesions)) <= {0, 1, 2} and not lesions[labels == 0].any()  # inside the lungs only
        both = m[key]["per_lung"]["both"]
        assert both["measured_ml"] <= both["lung_ml"] == pytest.approx(result.lung_volume_ml["total"], rel=1e-3)
        right, left = m[key]["per_lung"]["right"], m[key]["per_lung"]["left"]
        assert right["ggo_ml"] + left["ggo_ml"] == pytest.approx(both["ggo_ml"], abs=0.02)
        assert both["ggo_ml"] <= (lesions == 1).sum() * voxel_ml + 0.01  # measured lung excludes the 2 mm rim
        assert 0 <= both["ggo_pct"] <= 100 and 0 <= both["consolidation_pct"] <= 100
        assert m[key]["dominant"] in ("ground-glass opacity", "consolidation", "none measurable")
    assert len(m["per_slice_pct"]) > 0 and "heuristic" in m["possible_fibrotic_streaks"]["limits"].lower()
    assert "not validated" in m["caution"]
    # the distribution is of the lead lesion map over the same measured lung: its per-lung figures add up
    rep = json.loads((out / "report.json").read_text())
    d, lead = rep["distribution"], m[m["lead_method"]]["per_lung"]
    for side in ("right", "left"):
        assert d["per_lung"][side]["lesion_pct"] == pytest.approx(lead[side]["lesion_pct"], abs=0.02)
        keys = {"lesion_pct", "peripheral_pct", "central_pct", "score"}
        assert all(set(z) >= keys for z in d["zones"][side].values())
    assert d["severity_score"]["max"] == 30 and 0 <= d["severity_score"]["total"] <= 30
    v = rep["verdict"]
    assert v["category"] in ("COVID-19", "other pneumonia", "normal") and v["reason"] and v["evidence"]
    assert v["label"] in ("COVID-19", "no COVID-19 pattern")  # the binary model's own verdict stays beside it
    assert any(n.startswith("lesions_slice_") for n in (p.name for p in out.iterdir()))


def test_user_lung_mask_cli_and_api(report_dir, tmp_path):
    """--lung-mask: the report's lung mask of the first run, given back as a binary NIfTI, is used and named in
    report.json; a mask on another grid is refused with one error line and exit 2, writing nothing."""
    out, result = report_dir
    computed = json.loads((out / "report.json").read_text())["lung_mask"]
    assert computed["source"] == "computed (lung_mask.py)"
    mask_img = sitk.ReadImage(str(out / "lung_mask.nrrd"))
    binary = sitk.Cast(mask_img > 0, sitk.sitkUInt8)
    sitk.WriteImage(binary, str(tmp_path / "my lungs.nii.gz"))
    exe = [sys.executable, "-m", "CovidCTScreenLib.app.cli"]
    ok = subprocess.run(exe + [str(SAMPLE_CT), "--out", str(tmp_path / "r"), "--device", "cpu", "--quiet",
                               "--no-heatmap", "--no-lesions", "--lung-mask", str(tmp_path / "my lungs.nii.gz")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["lung_mask"]["source"] == "user file my lungs.nii.gz" and "binary" in rep["lung_mask"]["method"]
    used = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "r" / "lung_mask.nrrd")))
    assert (used == sitk.GetArrayFromImage(mask_img)).mean() > 0.999  # split into the same right / left lungs
    shifted = sitk.Image(binary)
    shifted.SetOrigin(tuple(o + 5.0 for o in binary.GetOrigin()))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nrrd"))
    bad = subprocess.run(exe + [str(SAMPLE_CT), "--out", str(tmp_path / "bad"), "--quiet", "--no-heatmap",
                                "--lung-mask", str(tmp_path / "shifted.nrrd")], capture_output=True, text=True)
    errors = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(errors) == 1 and "not on the CT grid" in errors[0], bad.stderr
    assert not (tmp_path / "bad").exists()
    from CovidCTScreenLib.lungs.lung_mask import LungMask

    given = LungMask(labels=result.mask.labels, body=result.mask.body, source={"source": "Slicer segmentation x",
                                                                               "method": "test"})
    api = screen_to_folder(SAMPLE_CT, tmp_path / "api", device="cpu", heatmap=False, lesions=False, lung_mask=given)
    assert api.mask is given
    assert json.loads((tmp_path / "api" / "report.json").read_text())["lung_mask"]["source"] == "Slicer segmentation x"
