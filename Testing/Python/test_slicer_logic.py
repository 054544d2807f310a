"""CovidCTScreenLogic (the code the widget and the Python console use) on a real MRML scene.

slicer-core has MRML but not the application: the module base classes, parameterNodeWrapper, qt and
ctk are replaced by minimal stand-ins so the module file imports; everything the logic does with
MRML nodes, the worker process and the report is real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SAMPLE_CT, load_slicer_module, tree_digest

try:
    import slicer
    assert hasattr(slicer, "vtkMRMLScene")
except (ImportError, AssertionError):  # never skipped: the logic runs on real MRML
    pytest.fail("slicer-core (MRML from PyPI) is needed: pip install slicer-core", pytrace=False)


@pytest.fixture
def module(monkeypatch):
    return load_slicer_module(monkeypatch, REPO / "CovidCTScreen" / "CovidCTScreen.py")


def test_refuses_non_ct_without_adding_nodes(module, scene):
    from CovidCTScreenLib.errors import InputError

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "flat")
    slicer.util.updateVolumeFromArray(node, np.full((8, 80, 80), 100, np.int16))
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="constant"):
        module.CovidCTScreenLogic().process(node)
    assert scene.GetNumberOfNodes() == before


def test_lesion_model_choice_reaches_the_worker(module, scene):
    """The lesion models offered are the shipped lesion-segmentation packages (by card task); the one chosen
    goes to the worker as --lesion-model, which parses it back into the screening options."""
    from CovidCTScreenLib.app import worker
    from CovidCTScreenLib.app.options import ScreenOptions
    from CovidCTScreenLib.input.volume_io import load_ct
    from CovidCTScreenLib.lesions.lesion_seg import DEFAULT_LESION_MODEL
    from CovidCTScreenLib.models import model_package
    from CovidCTScreenLib.slicer_glue import mrml

    node = mrml.ct_volume_to_node(load_ct(SAMPLE_CT), "sample", scene)
    runs = []

    class StoppedJob:
        def wait(self):
            return worker.EXIT_CANCELLED, "stopped by the test"

    def runner(cmd, env, cancel_file, callbacks):
        runs.append(cmd)
        return StoppedJob()

    logic = module.CovidCTScreenLogic(runner=runner)
    offered = dict((ref, label) for label, ref in logic.availableLesionModels())
    lesion_models = model_package.available_models(task=model_package.LESION_SEGMENTATION)
    assert sorted(offered) == sorted(lesion_models) and len(lesion_models) >= 2
    assert offered[DEFAULT_LESION_MODEL].endswith("(default)")
    assert not set(offered) & set(model_package.available_models(task=model_package.SLICE_CLASSIFICATION))
    other = next(m for m in lesion_models if m != DEFAULT_LESION_MODEL)
    for choice, expected in ((other, other), (None, None)):
        with pytest.raises(RuntimeError, match="Cancelled: stopped by the test"):
            logic.process(node, device="cpu", lesionModel=choice)
        cmd = runs[-1]
        parsed = ScreenOptions.from_args(worker.build_parser().parse_args(cmd[3:]))
        assert parsed.lesion_model == expected and parsed.lesions
    assert not Path(cmd[4]).parent.exists()  # the cancelled run's work folder is gone


def test_model_combo_helpers(module):
    """The widget fills its two model combo boxes and selects a reference (a folder not listed is added)."""
    class Combo:  # the few QComboBox calls the helpers make
        def __init__(self):
            self.items, self.currentIndex = [], -1

        def blockSignals(self, block):
            return False

        def clear(self):
            self.items = []

        def addItem(self, label, ref):
            self.items.append((label, ref))

        def findData(self, ref):
            return next((i for i, (_, r) in enumerate(self.items) if r == ref), -1)

        @property
        def count(self):
            return len(self.items)

        def setCurrentIndex(self, i):
            self.currentIndex = i

    combo = Combo()
    module._fillCombo(combo, [("a (default)", "a"), ("b", "b")])
    module._selectInCombo(combo, "b")
    assert combo.currentIndex == 1
    module._selectInCombo(combo, "/models/mine")
    assert combo.items[-1] == ("mine (folder)", "/models/mine") and combo.currentIndex == 2
    module._fillCombo(combo, [("a (default)", "a")])
    module._selectInCombo(combo, "")
    assert combo.items == [("a (default)", "a")] and combo.currentIndex == 0


@pytest.mark.slow
def test_process_sample_ct_blocking(module, scene, tmp_path):
    """Console use: process() blocks, returns nodes + report; input unchanged; override and export work."""
    from CovidCTScreenLib.slicer_glue import mrml
    from CovidCTScreenLib.models.model_package import DEFAULT_MODEL
    from CovidCTScreenLib.input.volume_io import load_ct

    digest = tree_digest(SAMPLE_CT)
    ct = load_ct(SAMPLE_CT)
    node = mrml.ct_volume_to_node(ct, "sample", scene)
    before = slicer.util.arrayFromVolume(node).copy()
    comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic = module.CovidCTScreenLogic()
    stages = []
    result = logic.process(node, model=DEFAULT_MODEL, device="cpu", progressCallback=lambda s, f: stages.append(s))
    assert np.array_equal(slicer.util.arrayFromVolume(node), before) and tree_digest(SAMPLE_CT) == digest
    assert {"lung mask", "inference", "grad-cam", "report"} <= set(stages)
    report = result["report"]
    assert report["model"]["name"] and report["verdict"]["label"] in ("COVID-19", "no COVID-19 pattern")
    assert result["segmentation"].GetSegmentation().GetNumberOfSegments() == 2
    np.testing.assert_allclose(mrml.node_ijk_to_ras(result["heatmap"]), mrml.node_ijk_to_ras(node), atol=1e-6)
    assert comp.GetForegroundVolumeID() == result["heatmap"].GetID()
    assert result["table"].GetNumberOfRows() == len(report["slices"])
    # per-slice lesion % of both methods in the table, drawn in the lesion chart (test_slice_scores.py checks values)
    assert result["lesion_chart"].GetNumberOfPlotSeriesNodes() == 2
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(result["table"], "lesion % (lesion UNet)"),
                               [s["lesions_pct_of_lung"]["learned"]["lesion_pct"] for s in report["slices"]])
    assert not (tmp_path / "x").exists()
    # threshold override changes the displayed verdict, not the report; export records it beside the report
    strict = logic.verdict(result, 0.99)
    assert strict["slice_threshold"] == 0.99 and strict["positive_slices"] <= report["verdict"]["positive_slices"]
    assert logic.verdict(result) == report["verdict"]
    # the three-class category and its evidence follow the override (recomputed from the report's lesion evidence)
    assert report["verdict"]["category"] in ("COVID-19", "other pneumonia", "normal")
    assert "zones" in report["distribution"]
    assert strict["category"] in ("COVID-19", "other pneumonia", "normal") and strict["evidence"]
    assert any("0.99" in e["value"] or "slice model" in e["finding"] for e in strict["evidence"])
    target = logic.exportReport(result["reportFolder"], tmp_path / "export", sliceThreshold=0.99)
    assert (target / "report.json").is_file() and (target / "verdict_override.json").is_file()
    with pytest.raises(RuntimeError, match="already exists"):
        logic.exportReport(result["reportFolder"], target)
    # a second run can fill the same output nodes, and take an existing lung segmentation as its lung mask
    lungs_before = mrml.labels_from_segmentation(result["segmentation"], node)
    again = logic.process(node, device="cpu", heatmap=False, lungSegmentation=result["segmentation"],
                          lesionModel="covidct-lesion-effunet-v2",
                          outputNodes={"segmentation": result["segmentation"], "table": result["table"],
                                       "chart": result["chart"]})
    assert again["report"]["lung_mask"]["source"] == f"Slicer segmentation {result['segmentation'].GetName()}"
    assert "covidct-lesion-effunet-v2" in again["report"]["manifestations"]["learned"]["method"]
    assert "covidct-lesion-unet-v1" in report["manifestations"]["learned"]["method"]  # the default
    np.testing.assert_array_equal(mrml.labels_from_segmentation(again["segmentation"], node), lungs_before)
    assert again["segmentation"] is result["segmentation"] and again["table"] is result["table"]
    assert again["heatmap"] is None and again["chart"].GetNumberOfPlotSeriesNodes() == 2
    # the temporary work folders do not pile up: a new run replaces the last one, the widget's cleanup removes it
    assert not Path(result["reportFolder"]).exists() and Path(again["reportFolder"], "report.json").is_file()
    logic.removeWorkFolder()
    assert not Path(again["reportFolder"]).parent.exists()


@pytest.mark.slow
def test_dicom_folder_series_selector_and_dicom_outputs(module, scene, tmp_path):
    """The series selector: a folder with two series is listed with the rule's choice marked; the series loaded
    by loadSeries is screened from its DICOM files (instance numbers in the table, DICOM SEG + SR written)."""
    import pydicom

    from conftest import DATA, DICOM_SERIES

    folder = tmp_path / "pacs"
    folder.mkdir()
    for src in (DICOM_SERIES, DATA / "covid-ct-md" / "COVID-19 subjects" / "P002"):
        for f in sorted(src.iterdir()):
            (folder / f"{src.name}_{f.name}").symlink_to(f.resolve())
    logic = module.CovidCTScreenLogic()
    listed = logic.listSeries(folder)
    chest = str(pydicom.dcmread(next(DICOM_SERIES.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    assert len(listed) == 2 and [best for uid, _, best in listed if uid != chest] == [True]  # 2 mm beats 8 mm
    node = logic.loadSeries(folder, chest)
    assert node.GetAttribute(module.ATTR_SERIES_UID) == chest
    assert slicer.util.arrayFromVolume(node).shape[0] == 30
    result = logic.process(node, device="cpu", heatmap=False)
    report = result["report"]
    assert report["input"]["series_instance_uid"] == chest and report["input"]["series_choice"]["how"] == "--series"
    assert set(report["files"]) >= {"dicom_seg", "dicom_sr", "html"}
    numbers = slicer.util.arrayFromTableColumn(result["table"], "instance")
    assert numbers.tolist() == [s["instance_number"] for s in report["slices"]]
    assert all(p.exists() for p in folder.iterdir())  # the DICOM folder is never removed or changed
    logic.removeWorkFolder()
