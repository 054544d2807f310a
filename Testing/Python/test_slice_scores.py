"""Per-slice lesion evidence (issue 11/12): the lesion % of each slice's lung by the lesion UNet and the HU bands in
slice_scores.csv, report.json, report.html and the Slicer table, from one definition (``manifestations
.slice_extent``). On COVID-CT-MD P002 (COVID-19) and normal002 from ../shared/data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from CovidCTScreenLib.lesions.manifestations import slice_counts, slice_extent

from conftest import infected_slices

KINDS = ("ggo", "consolidation", "lesion")


def _read_csv(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_slice_extent_counts_the_measured_lung():
    """Hand-countable slices: % of the measured lung (not of the lung mask), per lung and both; 0 without lung."""
    lungs = np.zeros((3, 4, 10), np.uint8)
    lungs[:, :, :5], lungs[:, :, 5:] = 1, 2  # right 20 voxels, left 20 voxels per slice
    measured = lungs > 0
    measured[:, 0] = False  # the rim: 15 measured voxels per lung
    measured[2] = False  # a slice with lung but nothing measurable
    labels = np.zeros_like(lungs)
    labels[0, 1, :3] = 1  # right: 3 GGO
    labels[0, 2, 5:11] = 2  # left: 5 consolidation
    labels[0, 0, :] = 1  # in the rim: not counted
    labels[1, 1:4, 5:10] = 1  # left: all 15 measured voxels GGO
    counts = slice_counts(labels, measured, lungs, [0, 1, 2])
    both, right, left = slice_extent(counts), slice_extent(counts, "right"), slice_extent(counts, "left")
    np.testing.assert_allclose(both["ggo_pct"], [10.0, 50.0, 0.0])
    np.testing.assert_allclose(both["consolidation_pct"], [16.67, 0.0, 0.0])  # to 0.01 %, as reported
    np.testing.assert_allclose(both["lesion_pct"], both["ggo_pct"] + both["consolidation_pct"])
    np.testing.assert_allclose(right["ggo_pct"], [20.0, 0.0, 0.0])
    np.testing.assert_allclose(left["lesion_pct"], [33.33, 100.0, 0.0])


@pytest.fixture(scope="module")
def p002_report(tmp_path_factory, covid19_ct, covid19_mask):
    """P002 screened into a report folder (the session's CT and lung mask; no heatmap)."""
    from CovidCTScreenLib.screening.pipeline import screen_to_folder

    out = tmp_path_factory.mktemp("p002") / "report"
    screen_to_folder(covid19_ct, out, device="cpu", heatmap=False, lung_mask=covid19_mask)
    return out


@pytest.fixture(scope="module")
def normal_no_lesions(tmp_path_factory, normal_ct, normal_mask):
    """normal002 screened with lesions switched off (``--no-lesions``)."""
    from CovidCTScreenLib.screening.pipeline import screen_to_folder

    out = tmp_path_factory.mktemp("normal") / "report"
    screen_to_folder(normal_ct, out, device="cpu", heatmap=False, lesions=False, lung_mask=normal_mask)
    return out


@pytest.mark.slow
def test_csv_lesion_columns_agree_with_the_mask_files(p002_report, covid19_ct):
    """Each slice's GGO / consolidation / lesion % in slice_scores.csv, recomputed from the lesion maps and the
    lung mask written beside it (measured lung = lung mask less its rim, by the HU-band code); report.json holds
    the same numbers."""
    from CovidCTScreenLib.lesions.hu_bands import hu_band_extent

    header, rows = _read_csv(p002_report / "slice_scores.csv")
    columns = [f"{m}_{k}_pct_of_lung" for m in ("unet", "hu_bands") for k in KINDS]
    assert header[-6:] == columns
    lungs = _array(p002_report / "lung_mask.nrrd")
    measured = hu_band_extent(covid19_ct.hu, lungs, covid19_ct.spacing).measured
    for method, name in (("unet", "lesions_learned.nrrd"), ("hu_bands", "lesions_hu_bands.nrrd")):
        lesions = _array(p002_report / name)
        for r in rows:
            k = int(r["slice"])
            inside = lesions[k][measured[k]]
            n = max(inside.size, 1)
            expect = {"ggo": 100 * (inside == 1).sum() / n, "consolidation": 100 * (inside == 2).sum() / n}
            expect["lesion"] = expect["ggo"] + expect["consolidation"]
            for kind in KINDS:
                tolerance = 0.0101 if kind == "lesion" else 0.0051  # each % to 0.01, lesion their sum
                assert float(r[f"{method}_{kind}_pct_of_lung"]) == pytest.approx(expect[kind], abs=tolerance)
    rep = json.loads((p002_report / "report.json").read_text())
    assert [s["slice"] for s in rep["slices"]] == [int(r["slice"]) for r in rows]
    for s, r in zip(rep["slices"], rows):
        assert s["lesions_pct_of_lung"]["learned"]["lesion_pct"] == float(r["unet_lesion_pct_of_lung"])
        assert s["lesions_pct_of_lung"]["hu_bands"]["ggo_pct"] == float(r["hu_bands_ggo_pct_of_lung"])
    assert "lesion UNet" in rep["slice_columns"]["lesions_pct_of_lung"]


@pytest.mark.slow
def test_lesion_pct_is_higher_on_infected_slices(p002_report, covid19_ct):
    """Against the radiologists' infected-slice labels of P002: the lesion UNet's per-slice lesion % ranks infected
    slices above uninfected ones (a rank statistic with a margin, not an exact figure)."""
    from CovidCTScreenLib.evaluation.metrics import roc_auc

    _, rows = _read_csv(p002_report / "slice_scores.csv")
    k = np.array([int(r["slice"]) for r in rows])
    y = infected_slices(covid19_ct)[k]
    unet = np.array([float(r["unet_lesion_pct_of_lung"]) for r in rows])
    assert 20 < y.sum() < len(y) - 20
    assert roc_auc(y, unet) > 0.85
    assert np.median(unet[y]) > np.median(unet[~y]) + 2.0  # percentage points of the slice's lung


@pytest.mark.slow
def test_report_html_and_plot_show_the_lesion_evidence(p002_report):
    from PIL import Image

    html = (p002_report / "report.html").read_text()
    assert "Per-slice evidence" in html and "lesion UNet lesion %" in html and "not validated on HU CT" in html
    rep = json.loads((p002_report / "report.json").read_text())
    assert all(key["lesion_method"] == "lesion UNet" for key in rep["key_slices"])
    two_panels = Image.open(p002_report / "slice_scores.png").size
    assert two_panels[1] > two_panels[0] * 0.6  # the lesion panel above the classifier panel


@pytest.mark.slow
def test_no_lesions_gives_no_lesion_columns(normal_no_lesions):
    from PIL import Image

    header, rows = _read_csv(normal_no_lesions / "slice_scores.csv")
    assert rows and not [h for h in header if "pct_of_lung" in h or "lesion" in h]
    rep = json.loads((normal_no_lesions / "report.json").read_text())
    assert not [s for s in rep["slices"] if "lesions_pct_of_lung" in s]
    assert all(key["lesion_pct"] is None and key["lesion_method"] is None for key in rep["key_slices"])
    assert "Lesions were not measured in this run" in (normal_no_lesions / "report.html").read_text()
    size = Image.open(normal_no_lesions / "slice_scores.png").size
    assert size[1] < size[0] * 0.6  # the classifier panel only


@pytest.mark.slow
def test_slicer_table_and_lesion_chart(scene, p002_report, normal_no_lesions, covid19_ct):
    """The Slicer module's table gets the lesion columns (unit %) and a lesion chart, lead method first; without
    lesions neither."""
    import slicer

    from CovidCTScreenLib.slicer_glue import mrml

    ct_node = mrml.ct_volume_to_node(covid19_ct, "P002", scene)
    loaded = mrml.load_report_folder(p002_report, ct_node, scene=scene)
    table = loaded["table"]
    _, rows = _read_csv(p002_report / "slice_scores.csv")
    for csv_name, table_name in (("unet_lesion_pct_of_lung", "lesion % (lesion UNet)"),
                                 ("hu_bands_ggo_pct_of_lung", "GGO % (HU bands)")):
        np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table, table_name),
                                   [float(r[csv_name]) for r in rows])
        assert table.GetColumnUnitLabel(table_name) == "%"
    chart = loaded["lesion_chart"]
    assert chart.GetNumberOfPlotSeriesNodes() == 2 and loaded["chart"].GetNumberOfPlotSeriesNodes() == 2
    assert [chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(2)] == ["lesion % (lesion UNet)",
                                                                                  "lesion % (HU bands)"]
    assert chart.GetNthPlotSeriesNode(0).GetTableNode() is table
    bare = mrml.load_report_folder(normal_no_lesions, None, scene=scene)
    names = [bare["table"].GetColumnName(i) for i in range(bare["table"].GetNumberOfColumns())]
    assert bare["lesion_chart"] is None and not [n for n in names if "%" in n]
