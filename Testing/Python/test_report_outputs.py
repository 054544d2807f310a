"""What a radiologist sees and where it goes (issue 14): multi-series DICOM folders, slice references as
instance number and z, key slices spread by evidence, full-resolution pictures, report.html rendered in headless
Chromium, and DICOM SEG / SR read back with pydicom and highdicom. All on real DICOM from ../shared/data."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.input.volume_io import list_series, load_ct
from CovidCTScreenLib.report.report import LESION_OUTLINE

from conftest import DATA, DICOM_SERIES, tree_digest

JPEG_LOSSLESS = DATA / "covid-ct-md" / "COVID-19 subjects" / "P002"


def _headers(folder: Path) -> list:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]


def _uid(folder: Path) -> str:
    return str(_headers(folder)[0].SeriesInstanceUID)


@pytest.fixture(scope="module")
def two_series(tmp_path_factory) -> Path:
    """A PACS-export-like folder: the chest-ct series (8 mm, B40f) and the COVID-CT-MD P002 series (2 mm, JPEG
    lossless) side by side, as symlinks to the shared files."""
    folder = tmp_path_factory.mktemp("pacs") / "export"
    folder.mkdir()
    for src in (DICOM_SERIES, JPEG_LOSSLESS):
        for f in sorted(src.iterdir()):
            (folder / f"{src.name}_{f.name}").symlink_to(f.resolve())
    return folder


def test_multi_series_folder_listed_and_chosen(two_series):
    before = tree_digest(two_series)
    series = {s.uid: s for s in list_series(two_series)}
    chest, covid = _uid(DICOM_SERIES), _uid(JPEG_LOSSLESS)
    assert set(series) == {chest, covid}
    assert len(series[chest].files) == 30 and series[chest].kernel == "B40f" and series[chest].thickness_mm == 8
    assert len(series[covid].files) == 133 and series[covid].thickness_mm == 2
    # the rule: thin slices first -> the 2 mm series, and the report says which and how
    ct = load_ct(two_series)
    assert ct.shape[0] == 133 and ct.meta["series_instance_uid"] == covid
    choice = ct.meta["series_choice"]
    assert choice["chosen"] == covid and choice["how"].startswith("rule:") and len(choice["series"]) == 2
    # --series picks the other one
    ct = load_ct(two_series, series_uid=chest)
    assert ct.shape[0] == 30 and ct.meta["series_choice"]["how"] == "--series"
    with pytest.raises(InputError, match="is not in this folder; its series are: .*B40f"):
        load_ct(two_series, series_uid="1.2.3.4")
    assert tree_digest(two_series) == before


def test_single_slice_series_beside_a_ct_is_not_chosen(tmp_path):
    """A stray single image (another series) in a CT folder no longer refuses the folder: it is listed, not used."""
    from conftest import COVID_HU

    folder = tmp_path / "in"
    shutil.copytree(DICOM_SERIES, folder)
    shutil.copy(sorted(COVID_HU.glob("*.dcm"))[0], folder / "other.dcm")
    ct = load_ct(folder)
    assert ct.shape[0] == 30 and ct.meta["series_instance_uid"] == _uid(DICOM_SERIES)
    assert len(ct.meta["series_choice"]["series"]) == 2


def test_instance_numbers_follow_the_headers(dicom_ct):
    """Slice k of the LPS volume carries the InstanceNumber of the file at its z (the viewer's 'Im' number)."""
    from CovidCTScreenLib.report.report import slice_name, slice_z_mm

    by_z = {round(float(h.ImagePositionPatient[2]), 2): int(h.InstanceNumber) for h in _headers(DICOM_SERIES)}
    for k in range(dicom_ct.shape[0]):
        assert dicom_ct.instance_numbers[k] == by_z[round(slice_z_mm(dicom_ct, k), 2)]
    assert slice_name(dicom_ct, 3).startswith(f"instance {dicom_ct.instance_numbers[3]} (z ")
    nifti = load_ct(DATA / "chest-ct" / "Lung_Dx-A0001_5mm_B.nii.gz")
    assert nifti.instance_numbers is None and slice_name(nifti, 3).startswith("slice 3 (z ")


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is needed to render report.html: apt-get install chromium", pytrace=False)
    return exe


def render_in_chromium(html: Path, tmp_path: Path) -> tuple[str, Path]:
    """(rendered DOM text, screenshot path) of ``html`` in headless Chromium."""
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}"]
    shot = tmp_path / "report_html.png"
    subprocess.run(base + ["--window-size=1200,2400", f"--screenshot={shot}", html.as_uri()], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run(base + ["--dump-dom", html.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    return dom, shot


@pytest.mark.slow
class TestDicomStudy:
    """One screening of a DICOM series chosen with --series out of a two-series folder (the CLI, as users run it)."""

    @pytest.fixture(scope="class")
    def run(self, two_series, tmp_path_factory):
        out = tmp_path_factory.mktemp("report") / "r"
        before = tree_digest(DICOM_SERIES)
        proc = subprocess.run([sys.executable, "-m", "CovidCTScreenLib.app.cli", str(two_series), "--out", str(out),
                               "--series", _uid(DICOM_SERIES), "--device", "cpu", "--quiet"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert tree_digest(DICOM_SERIES) == before  # input never modified
        assert "2 series in the folder; screened " + _uid(DICOM_SERIES) in proc.stdout
        return out, json.loads((out / "report.json").read_text())

    def test_slice_references_everywhere(self, run):
        out, rep = run
        by_z = {round(float(h.ImagePositionPatient[2]), 2): int(h.InstanceNumber) for h in _headers(DICOM_SERIES)}
        for s in rep["slices"]:
            assert s["instance_number"] == by_z[round(s["z_mm"], 2)]
        with open(out / "slice_scores.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["instance_number"]) for r in rows] == [s["instance_number"] for s in rep["slices"]]
        for k in rep["key_slices"]:
            assert k["name"] == f"instance {k['instance_number']} (z {k['z_mm']:.1f} mm)"
        named = rep["verdict"]["top_slices"] + rep["manifestations"]["per_slice_pct"]
        assert all(r["instance_number"] == by_z[round(r["z_mm"], 2)] for r in named)

    def test_key_slices_spread_by_evidence(self, run):
        out, rep = run
        keys = rep["key_slices"]
        assert len(keys) == 5 and {k["zone"] for k in keys} == {"lower", "middle", "upper"}
        z = sorted(k["z_mm"] for k in keys)
        spacing = rep["input"]["spacing_mm_xyz"][2]
        assert min(np.diff(z)) >= max(10.0, 3 * spacing) - 1e-6  # never adjacent slices
        evidence = [k["evidence"] for k in keys]
        assert evidence == sorted(evidence, reverse=True)
        # chosen by the lead method's lesion evidence (the classifier does not track infection on HU CT): more
        # lesion than the typical lung slice, and the first key slice is the one with the largest lesion area
        lead = rep["manifestations"]["lead_method"]  # the key slices show the lead method's lesion %
        lesion = [s["lesions_pct_of_lung"][lead]["lesion_pct"] for s in rep["slices"]]
        assert np.mean([k["lesion_pct"] for k in keys]) > np.median(lesion)
        name = "lesions_learned.nrrd" if lead == "learned" else "lesions_hu_bands.nrrd"
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / name)))
        area = (labels > 0).sum(axis=(1, 2))
        assert area[keys[0]["slice"]] == max(area[s["slice"]] for s in rep["slices"])

    def test_pictures_full_resolution_one_heat_scale(self, run):
        from PIL import Image

        out, rep = run
        width = rep["input"]["shape_zyx"][2]
        outline = [np.round(255 * np.array(c)).astype(int) for c in LESION_OUTLINE.values()]
        for k in rep["key_slices"]:
            img = np.asarray(Image.open(out / k["png"]).convert("RGB"))
            assert img.shape[1] >= width and img.shape[0] >= rep["input"]["shape_zyx"][1]
            # the lead method's lesions are outlined on the CT (the legend's short lines alone are < 100 pixels)
            ct = img[: rep["input"]["shape_zyx"][1]].astype(int)
            drawn = sum(int((np.abs(ct - c).max(axis=-1) <= 8).sum()) for c in outline)
            if k["lesion_pct"] >= 1.0 or k["lesion_pct"] == 0.0:
                assert (drawn > 100) == (k["lesion_pct"] > 0), (k["slice"], k["lesion_pct"], drawn)
        heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "heatmap.nrrd")))
        lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_mask.nrrd"))) > 0
        assert rep["pictures"]["heatmap_scale"]["max"] == pytest.approx(np.percentile(heat[lungs], 99.9), abs=1e-3)
        assert rep["pictures"]["window"] == {"width_hu": 1500.0, "level_hu": -600.0}
        lesion_png = Image.open(out / rep["files"]["lesions_plot"])
        assert lesion_png.size[0] >= 3 * width  # CT, HU bands, UNet (+ streaks when that slice has any)

    def test_html_rendered_in_chromium(self, run, tmp_path, record_property):
        from PIL import Image

        out, rep = run
        html = (out / "report.html").read_text()
        assert "src=\"http" not in html and html.count("data:image/png;base64,") == len(rep["key_slices"]) + 2
        dom, shot = render_in_chromium(out / "report.html", tmp_path)
        assert rep["verdict"]["label"] in dom and "RESEARCH USE ONLY" in dom
        for k in rep["key_slices"]:
            assert k["name"] in dom
        pixels = np.asarray(Image.open(shot).convert("L"), float)
        assert pixels.std() > 20 and (pixels < 100).mean() > 0.05  # text and CT images drawn, not a blank page
        record_property("report_html_screenshot", str(shot))  # in the junit XML; the file stays in tmp_path
        print(f"report.html screenshot: {shot}")

    def test_html_renders_optional_keys(self, run, tmp_path):
        """Keys other helpers add (verdict category / evidence / reason, distribution, lung_mask) appear when
        present; absent, nothing fails (the run above has none of them)."""
        from CovidCTScreenLib.report.report_html import render_html

        out, rep = run
        rep = json.loads(json.dumps(rep))
        rep["verdict"] |= {"category": "other pneumonia", "reason": "reason sentence",
                           "evidence": [{"finding": "bilateral", "value": "yes", "points_to": "COVID-19"}]}
        zones = {side: {z: {"lesion_pct": 1.5, "peripheral_pct": 1.0, "central_pct": 0.5, "score": 1}
                        for z in ("upper", "middle", "lower")} for side in ("right", "left")}
        rep["distribution"] = {"zones": zones, "bilateral": True, "peripheral_predominant": False,
                               "lower_zone_predominant": False,
                               "severity_score": {"total": 6, "max": 30, "definition": "sum of zone scores"}}
        rep["lung_mask"] = {"source": "user file lungs.nrrd"}
        page = tmp_path / "page.html"
        page.write_text(render_html(rep, out))
        dom, _ = render_in_chromium(page, tmp_path)
        for text in ("other pneumonia", "reason sentence", "bilateral", "right upper", "left lower",
                     "severity score 6 of 30", "user file lungs.nrrd"):
            assert text in dom

    def test_dicom_seg_and_sr_read_back(self, run):
        import highdicom as hd

        out, rep = run
        heads = _headers(DICOM_SERIES)
        source_uids = {str(h.SOPInstanceUID) for h in heads} | {str(heads[0].SeriesInstanceUID)}
        seg = hd.seg.segread(out / rep["files"]["dicom_seg"])
        raw = pydicom.dcmread(out / rep["files"]["dicom_seg"])
        assert raw.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and raw.Modality == "SEG"
        assert raw.StudyInstanceUID == heads[0].StudyInstanceUID  # joins the study as a new series
        assert raw.SOPInstanceUID not in source_uids and raw.SeriesInstanceUID not in source_uids
        assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == heads[0].SeriesInstanceUID
        codes = {d.SegmentLabel: (d.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
                                  d.SegmentedPropertyTypeCodeSequence[0].CodeValue) for d in raw.SegmentSequence}
        assert codes["right lung"] == ("SCT", "3341006") and codes["left lung"] == ("SCT", "44029006")
        assert codes["GGO (HU bands)"] == ("DCM", "112120")
        assert codes["consolidation (lesion UNet)"] == ("SCT", "95436008")
        # the lung segments equal lung_mask.nrrd slice by slice (source frames matched by instance number)
        uids = [h.SOPInstanceUID for h in heads]
        frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2])
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_mask.nrrd")))
        k_of = {s["instance_number"]: s["slice"] for s in rep["slices"]}
        for i, h in enumerate(heads):
            k = k_of.get(int(h.InstanceNumber))
            if k is not None:
                np.testing.assert_array_equal(frames[i, ..., 0] > 0, labels[k] == 1)
                np.testing.assert_array_equal(frames[i, ..., 1] > 0, labels[k] == 2)
        sr = hd.sr.srread(out / rep["files"]["dicom_sr"])
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34" and sr.SOPInstanceUID not in source_uids
        volumes = {str(g.tracking_identifier): g.get_measurements()[0].value
                   for g in sr.content.get_volumetric_roi_measurement_groups()}
        assert float(volumes["right lung"]) == pytest.approx(rep["lungs"]["volume_ml"]["right"], abs=0.1)
        assert float(volumes["left lung"]) == pytest.approx(rep["lungs"]["volume_ml"]["left"], abs=0.1)
        verdicts = [q.value.meaning for g in sr.content.get_image_measurement_groups()
                    for q in g.get_qualitative_evaluations()]
        assert verdicts == [rep["verdict"].get("category") or rep["verdict"]["label"]]


def test_sources_without_instance_uids_get_no_dicom_outputs():
    """The COVID-CT-MD sample was anonymised down to empty SOPInstanceUIDs: a SEG or SR could not reference it,
    so none is written and the report says why (write_dicom puts the reason in report.json and report.html)."""
    from CovidCTScreenLib.report.dicom_export import unreferenceable

    assert "empty SOPInstanceUIDs" in unreferenceable(_headers(JPEG_LOSSLESS))
    assert unreferenceable(_headers(DICOM_SERIES)) is None


@pytest.mark.slow
def test_jpeg_lossless_series_gives_dicom_outputs(tmp_path):
    """COVID-CT-MD P002 (JPEG lossless) as a PACS would export it: the same files with UIDs of their own (the
    compressed pixel data is copied untouched). SEG and SR reference it and read back."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    from CovidCTScreenLib.screening.pipeline import screen_to_folder

    src = tmp_path / "P002"
    src.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for f in sorted(JPEG_LOSSLESS.iterdir()):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(src / f.name)
    before = tree_digest(src)
    screen_to_folder(src, tmp_path / "r", device="cpu", heatmap=False)
    assert tree_digest(src) == before
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    heads = _headers(src)
    seg = hd.seg.segread(tmp_path / "r" / rep["files"]["dicom_seg"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series and seg.StudyInstanceUID == study
    assert seg.number_of_segments == 6 and seg.FrameOfReferenceUID == frame
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=[h.SOPInstanceUID for h in heads],
                                               segment_numbers=[1, 2])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "r" / "lung_mask.nrrd")))
    k_of = {s["instance_number"]: s["slice"] for s in rep["slices"]}
    for i, h in enumerate(heads):
        if int(h.InstanceNumber) in k_of:
            np.testing.assert_array_equal(frames[i, ..., 0] > 0, labels[k_of[int(h.InstanceNumber)]] == 1)
    sr = hd.sr.srread(tmp_path / "r" / rep["files"]["dicom_sr"])
    assert len(sr.content.get_volumetric_roi_measurement_groups()) == 6
    assert {k["instance_number"] for k in rep["key_slices"]} <= {int(h.InstanceNumber) for h in heads}


def test_series_rule_order():
    """SERIES_RULE on series as PACS exports hold them: scouts and non-axial series never win; thin beats thick;
    among thin series a lung kernel beats a soft one; then the thinnest, then the most images."""
    from CovidCTScreenLib.input.volume_io import SeriesInfo, choose_series

    def series(uid, n, mm, kernel, image_type="ORIGINAL\\PRIMARY\\AXIAL", axial=True):
        return SeriesInfo(uid, uid, [f"{uid}{i}" for i in range(n)], uid, "CT", kernel, mm, 0.7, image_type, axial)

    scout = series("scout", 2, 0.0, "", "ORIGINAL\\PRIMARY\\LOCALIZER", axial=False)
    thick_lung = series("thick lung", 60, 5.0, "B70f")
    thin_soft = series("thin soft", 300, 1.0, "B30f")
    thin_lung = series("thin lung", 300, 1.0, "B70f")
    thinner_soft = series("thinner soft", 480, 0.625, "STANDARD")
    ge_lung = series("ge lung", 240, 1.25, "LUNG")
    coronal = series("coronal", 400, 1.0, "B70f", axial=False)
    assert choose_series([scout, thick_lung, thin_soft]).uid == "thin soft"
    assert choose_series([scout, thin_soft, thin_lung, coronal]).uid == "thin lung"
    assert choose_series([thinner_soft, ge_lung]).uid == "ge lung"
    assert choose_series([thinner_soft, thin_soft]).uid == "thinner soft"
    assert choose_series([scout, coronal, thick_lung]).uid == "thick lung"


def test_dicom_export_failure_leaves_no_report(tmp_path, dicom_ct, dicom_mask):
    """All or nothing: when the DICOM outputs cannot be written, no report folder (and no partial one) stays."""
    import dataclasses

    from test_mrml import _fake_result

    from CovidCTScreenLib.report.report import write_report

    broken = tmp_path / "not_dicom.dcm"
    broken.write_bytes(b"not a DICOM file")
    ct = dataclasses.replace(dicom_ct, dicom_files=[str(broken)] * 3)
    with pytest.raises(Exception):
        write_report(_fake_result(ct, dicom_mask), tmp_path / "r")
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.partial-*"))
