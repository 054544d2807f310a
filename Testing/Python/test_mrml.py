"""MRML glue on a real scene (slicer-core) and a real CT: geometry, segments, heatmap, table, plot, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

try:
    import slicer
    assert hasattr(slicer, "vtkMRMLScene")
except (ImportError, AssertionError):  # never skipped: the MRML glue is part of the product
    pytest.fail("slicer-core (MRML from PyPI) is needed: pip install slicer-core", pytrace=False)

from CovidCTScreenLib.slicer_glue import mrml  # noqa: E402
from CovidCTScreenLib.models.model_package import ModelPackage  # noqa: E402
from CovidCTScreenLib.screening.pipeline import ScreenResult  # noqa: E402
from CovidCTScreenLib.screening.verdict import study_verdict  # noqa: E402
from CovidCTScreenLib.input.volume_io import CTVolume, load_ct  # noqa: E402

F = np.diag([-1.0, -1.0, 1.0])


def sitk_ras(volume: CTVolume, ijk) -> np.ndarray:
    """RAS of voxel (i, j, k) computed by SimpleITK (LPS) and flipped: the independent reference."""
    img = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    img.SetSpacing(volume.spacing)
    img.SetOrigin(volume.origin)
    img.SetDirection(volume.direction)
    return F @ np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))


def node_ras(node, ijk) -> np.ndarray:
    m = mrml.node_ijk_to_ras(node)
    return (m @ np.array([*ijk, 1.0]))[:3]


def oblique(ct: CTVolume) -> CTVolume:
    """A crop of the real CT with a rotated, flipped direction and an odd origin (non-trivial geometry)."""
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.diag([1, -1, 1])
    return CTVolume(hu=ct.hu[5:13, 100:300, 150:400].copy(), spacing=(0.7, 0.9, 5.0), origin=(12.5, -40.0, 301.0),
                    direction=tuple(rot.ravel()), source="oblique")


CORNERS = [(0, 0, 0), (249, 0, 0), (0, 199, 0), (0, 0, 7), (249, 199, 7), (17.5, 33.0, 2.0)]


def test_volume_node_roundtrip_real_ct(scene, dicom_ct):
    node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    assert slicer.util.arrayFromVolume(node).shape == dicom_ct.shape
    # IJK-to-RAS: voxel centres agree with SimpleITK's LPS geometry, flipped to RAS
    for ijk in [(0, 0, 0), (511, 0, 0), (0, 511, 29), (200.5, 300.0, 12.0)]:
        np.testing.assert_allclose(node_ras(node, ijk), sitk_ras(dicom_ct, ijk), atol=1e-4)
    # the CT origin (LPS -173.18, -294.18, 80) is RAS (173.18, 294.18, 80)
    np.testing.assert_allclose(node.GetOrigin(), (-dicom_ct.origin[0], -dicom_ct.origin[1], dicom_ct.origin[2]),
                               atol=1e-6)
    back = mrml.ct_volume_from_node(node)
    assert back.hu.dtype == np.float32 and np.array_equal(back.hu, dicom_ct.hu)
    assert back.spacing == pytest.approx(dicom_ct.spacing)
    assert back.origin == pytest.approx(dicom_ct.origin)
    assert back.direction == pytest.approx(dicom_ct.direction, abs=1e-12)
    back.hu[:] = 0  # a copy: the node is never modified through the returned volume
    assert slicer.util.arrayFromVolume(node).min() == dicom_ct.hu.min()


def test_oblique_geometry_and_linear_transform(scene, dicom_ct):
    vol = oblique(dicom_ct)
    node = mrml.ct_volume_to_node(vol, "oblique", scene)
    for ijk in CORNERS:
        np.testing.assert_allclose(node_ras(node, ijk), sitk_ras(vol, ijk), atol=1e-4)
    back = mrml.ct_volume_from_node(node)
    assert back.direction == pytest.approx(vol.direction, abs=1e-9)
    assert back.spacing == pytest.approx(vol.spacing) and back.origin == pytest.approx(vol.origin)
    # a linear parent transform moves the volume in world space; the CT handed to the core follows it
    tnode = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (10.0, -5.0, 2.5)
    tnode.SetMatrixTransformToParent(mrml._vtk_matrix(shift))
    node.SetAndObserveTransformNodeID(tnode.GetID())
    moved = mrml.ct_volume_from_node(node)
    np.testing.assert_allclose(np.array(moved.origin), np.array(vol.origin) + F @ shift[:3, 3], atol=1e-9)


def test_refuses_non_ct_nodes(scene, dicom_ct):
    from CovidCTScreenLib.errors import InputError

    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.util.updateVolumeFromArray(label, np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(InputError, match="label map"):
        mrml.ct_volume_from_node(label)
    with pytest.raises(InputError, match="no voxels"):
        mrml.ct_volume_from_node(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))


def test_heatmap_lands_on_ct_voxels(scene, dicom_ct):
    vol = oblique(dicom_ct)
    ct_node = mrml.ct_volume_to_node(vol, "ct", scene)
    heat = np.clip((vol.hu + 1000) / 1400, 0, 1).astype(np.float32)
    node = mrml.heatmap_node(heat, vol.spacing, vol.origin, vol.direction, "heat", scene, source_node=ct_node)
    np.testing.assert_allclose(mrml.node_ijk_to_ras(node), mrml.node_ijk_to_ras(ct_node), atol=1e-9)
    # the heatmap voxel at the RAS point of a CT voxel is the voxel with the same index
    ras_to_ijk = np.linalg.inv(mrml.node_ijk_to_ras(node))
    for ijk in CORNERS[:5]:
        ras = node_ras(ct_node, ijk)
        back = np.rint((ras_to_ijk @ np.array([*ras, 1.0]))[:3]).astype(int)
        np.testing.assert_array_equal(back, ijk)
        assert slicer.util.arrayFromVolume(node)[back[2], back[1], back[0]] == heat[ijk[2], ijk[1], ijk[0]]
    display = node.GetDisplayNode()
    color = display.GetColorNode()
    assert color.GetName() == mrml.HEATMAP_COLOR_NAME and color.GetNumberOfColors() == 256
    low, high = [0.0] * 4, [0.0] * 4
    color.GetColor(0, low)
    color.GetColor(255, high)
    assert sum(low[:3]) < 0.1 and sum(high[:3]) > 2.5  # dark -> bright (inferno)
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(mrml.HEATMAP_DISPLAY_MIN)
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert node.GetAttribute(mrml.ATTR_SOURCE) == ct_node.GetID()
    # shown as foreground over the CT in the slice views, opacity adjustable
    comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    assert mrml.show_heatmap(ct_node, node, 0.35, scene) == 1
    assert comp.GetBackgroundVolumeID() == ct_node.GetID() and comp.GetForegroundVolumeID() == node.GetID()
    mrml.set_heatmap_opacity(0.8, scene)
    assert comp.GetForegroundOpacity() == pytest.approx(0.8)
    assert mrml.heatmap_color_node(scene) is color  # one colour table per scene


def test_jump_slices_to_axial_slice(scene, dicom_ct):
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetOrientationToAxial()
    k = 17
    ras = mrml.slice_center_ras(dicom_ct.spacing, dicom_ct.origin, dicom_ct.direction, dicom_ct.shape, k)
    assert ras[2] == pytest.approx(dicom_ct.origin[2] + k * dicom_ct.spacing[2])
    assert mrml.jump_slices_to(ras, scene) == 1
    assert slice_node.GetSliceToRAS().GetElement(2, 3) == pytest.approx(ras[2])


def test_lung_segmentation_roundtrip(scene, dicom_ct, dicom_mask, tmp_path):
    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    seg = mrml.lung_segmentation_node(dicom_mask.labels, dicom_ct.spacing, dicom_ct.origin, dicom_ct.direction,
                                      "lungs", reference_node=ct_node, scene=scene)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    names = [segmentation.GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["right lung", "left lung"]
    for name, code in (("right lung", "3341006"), ("left lung", "44029006")):
        segment = segmentation.GetSegment(mrml.segment_id(seg, name))
        tag = mrml.terminology(segment)
        fields = tag.split("~")
        assert len(fields) == 7 and fields[1] == "SCT^123037004^Anatomical Structure"
        assert fields[2].startswith(f"SCT^{code}^")
    assert seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is ct_node
    assert not scene.GetFirstNodeByName("lung mask-tmp")  # the temporary label map is gone
    labels = mrml.labels_from_segmentation(seg, ct_node)
    np.testing.assert_array_equal(labels, dicom_mask.labels)
    # .seg.nrrd written and read back with slicer-core storage nodes
    path = mrml.write_node(seg, tmp_path / "lungs.seg.nrrd")
    again = mrml.read_node(path, "vtkMRMLSegmentationNode", "again", scene)
    assert [again.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)] == names
    np.testing.assert_array_equal(mrml.labels_from_segmentation(again, ct_node), dicom_mask.labels)
    tag = mrml.terminology(again.GetSegmentation().GetSegment(mrml.segment_id(again, "left lung")))
    assert "44029006" in tag


def test_slicer_and_dicom_seg_codes_come_from_one_table():
    """The Slicer segments' terminology strings and the DICOM SEG's coded concepts name the same codes."""
    from CovidCTScreenLib.report.dicom_export import _codes

    slicer_tags = {"right lung": mrml.LUNG_TERMINOLOGY[1], "left lung": mrml.LUNG_TERMINOLOGY[2],
                   "ggo": mrml.LESION_SEGMENTS[1][3], "consolidation": mrml.LESION_SEGMENTS[2][3]}
    for key, (category, kind, region) in _codes().items():
        fields = slicer_tags[key].split("~")
        written = [f"{c.scheme_designator}^{c.value}^{c.meaning}" if c else "^^" for c in (category, kind, region)]
        assert [fields[1], fields[2], fields[5]] == written, key


def test_one_lung_still_gives_both_segments(scene, dicom_ct, dicom_mask):
    labels = np.where(dicom_mask.labels == 2, 2, 0).astype(np.uint8)
    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    seg = mrml.lung_segmentation_node(labels, dicom_ct.spacing, dicom_ct.origin, dicom_ct.direction,
                                      reference_node=ct_node, scene=scene)
    assert seg.GetSegmentation().GetNumberOfSegments() == 2
    np.testing.assert_array_equal(mrml.labels_from_segmentation(seg, ct_node), labels)


def test_nrrd_storage_and_worker_input_file(scene, dicom_ct, tmp_path):
    node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    path = mrml.write_node(node, tmp_path / "ct.nrrd")
    again = mrml.read_node(path, "vtkMRMLScalarVolumeNode", "again", scene)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(again), dicom_ct.hu)
    np.testing.assert_allclose(mrml.node_ijk_to_ras(again), mrml.node_ijk_to_ras(node), atol=1e-6)
    # the file the widget hands to the worker reads back through the core reader unchanged
    worker_input = mrml.write_volume_file(node, tmp_path / "input.nrrd")
    loaded = load_ct(worker_input)
    assert np.array_equal(loaded.hu, dicom_ct.hu)
    assert loaded.origin == pytest.approx(dicom_ct.origin) and loaded.spacing == pytest.approx(dicom_ct.spacing)


def test_table_and_plot_nodes(scene):
    k = np.array([3, 4, 5, 9])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    table = mrml.scores_table_node(k, probs, ["non-COVID-19", "COVID-19"], 0.55, z_mm=[1, 2, 3, 4],
                                   positive_index=1, name="scores", scene=scene)
    assert table.GetNumberOfRows() == 4
    assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == \
        ["slice", "z_mm", "P(non-COVID-19)", "P(COVID-19)", "positive", "threshold"]
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(table, "slice"), k)
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table, "P(COVID-19)"), probs[:, 1])
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(table, "positive"), [0, 1, 1, 0])
    chart, series, threshold = mrml.scores_plot_nodes(table, "P(COVID-19)", "scores", scene)
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert chart.GetNthPlotSeriesNode(0) is series and chart.GetNthPlotSeriesNode(1) is threshold
    assert series.GetTableNode() is table
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("slice", "P(COVID-19)")
    assert threshold.GetYColumnName() == "threshold"
    assert not chart.GetYAxisRangeAuto()
    # rewriting the same table node (threshold override) keeps one table
    mrml.scores_table_node(k, probs, ["non-COVID-19", "COVID-19"], 0.7, positive_index=1, scene=scene, node=table)
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(table, "positive"), [0, 0, 1, 0])


def test_results_placed_under_study(scene, dicom_ct):
    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "patient")
    study = sh.CreateStudyItem(patient, "study")
    series_folder = sh.CreateFolderItem(study, "series folder")
    # the application's subject hierarchy plugins create items for new nodes; a bare scene does not
    sh.CreateItem(series_folder, ct_node)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    assert mrml.place_in_study([table, None], ct_node, scene) == study
    assert sh.GetItemParent(sh.GetItemByDataNode(table)) == study
    # no study: left where it is
    other = mrml.ct_volume_to_node(dicom_ct, "loose", scene)
    assert mrml.place_in_study([table], other, scene) is None


def _fake_result(ct, mask) -> ScreenResult:
    """A ScreenResult with the real CT and lung mask and made-up scores (no model run, no torch)."""
    lung = np.flatnonzero(mask.lungs.sum(axis=(1, 2)) > 2000)
    pos = np.linspace(0.05, 0.95, len(lung)).astype(np.float32)
    card = {"name": "test-card", "architecture": "none", "labels": ["NonCOVID", "COVID"], "positive_label": "COVID",
            "task": "slice-classification", "weights_sha256": "0" * 64, "training": {"train": "none"},
            "operating_point": {"slice_threshold": 0.5}, "study_rule": {"min_fraction": 0.05},
            "validation": {"split": "none", "at_operating_point": {"auc": 0, "sensitivity": 0, "specificity": 0,
                                                                  "f1": 0}},
            "calibration": {"temperature": 1.0}, "input": {"spatial_shape": [224, 224], "hu_window": [-1100, 100]}}
    heat = np.zeros(ct.shape, np.float32)
    heat[lung] = np.where(mask.lungs[lung], pos[:, None, None], 0)
    return ScreenResult(volume=ct, mask=mask, model=ModelPackage(path=ct.source, card=card), slice_indices=lung,
                        probabilities=np.stack([1 - pos, pos], 1), heatmap=heat,
                        verdict=study_verdict(lung, pos, 0.5, 0.05), device="cpu")


def test_load_report_folder_all_or_nothing(scene, dicom_ct, dicom_mask, tmp_path):
    from CovidCTScreenLib.report.report import write_report

    result = _fake_result(dicom_ct, dicom_mask)
    out = write_report(result, tmp_path / "report")
    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    loaded = mrml.load_report_folder(out, ct_node, scene=scene, heatmap_opacity=0.4)
    assert loaded["report"]["verdict"]["label"] == result.verdict.label
    np.testing.assert_array_equal(mrml.labels_from_segmentation(loaded["segmentation"], ct_node), dicom_mask.labels)
    heat = loaded["heatmap"]
    np.testing.assert_allclose(mrml.node_ijk_to_ras(heat), mrml.node_ijk_to_ras(ct_node), atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(heat), result.heatmap, atol=1e-6)
    assert comp.GetForegroundVolumeID() == heat.GetID()
    table = loaded["table"]
    np.testing.assert_array_equal(slicer.util.arrayFromTableColumn(table, "slice"), result.slice_indices)
    np.testing.assert_allclose(slicer.util.arrayFromTableColumn(table, "P(COVID-19)"),
                               result.positive_probability, atol=1e-4)
    assert loaded["chart"].GetNumberOfPlotSeriesNodes() == 2
    # a broken folder adds nothing to the scene
    before = scene.GetNumberOfNodes()
    (out / "heatmap.nrrd").write_bytes(b"NRRD0004\nbroken")
    with pytest.raises(Exception):
        mrml.load_report_folder(out, ct_node, scene=scene)
    assert scene.GetNumberOfNodes() == before
    assert json.loads((out / "report.json").read_text())["files"]["heatmap"] == "heatmap.nrrd"


def test_result_nodes_survive_scene_save(scene, dicom_ct, tmp_path):
    """Node attributes and references the module relies on are stored in the .mrml scene file."""
    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    table = mrml.scores_table_node([1, 2], [[0.3, 0.7], [0.8, 0.2]], ["a", "b"], 0.5, scene=scene)
    table.SetAttribute(mrml.ATTR_SOURCE, ct_node.GetID())
    param = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "CovidCTScreen")
    param.SetParameter("device", "cpu")
    param.SetNodeReferenceID("inputVolume", ct_node.GetID())
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    other = slicer.vtkMRMLScene()
    other.SetURL(str(tmp_path / "scene.mrml"))
    other.Import()
    p2 = other.GetFirstNodeByName("CovidCTScreen")
    assert p2.GetParameter("device") == "cpu"
    assert p2.GetNodeReference("inputVolume").GetName() == "ct"
    assert other.GetFirstNodeByName(table.GetName()).GetAttribute(mrml.ATTR_SOURCE) == p2.GetNodeReferenceID(
        "inputVolume")


def test_lesion_segments_from_a_report_with_manifestations(scene, dicom_ct, dicom_mask, tmp_path):
    """GGO and consolidation come into Slicer as separate, editable segments with standard terminology (DICOM
    112120 ground glass opacity, SNOMED CT 95436008 lung consolidation), on the CT's grid, for both methods."""
    from CovidCTScreenLib.lesions.manifestations import measure
    from CovidCTScreenLib.report.report import write_report

    result = _fake_result(dicom_ct, dicom_mask)
    result.manifestations = measure(dicom_ct, dicom_mask)
    out = write_report(result, tmp_path / "report")
    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    loaded = mrml.load_report_folder(out, ct_node, scene=scene)
    for key, truth in (("lesions_learned", result.manifestations.learned),
                       ("lesions_hu_bands", result.manifestations.hu_bands)):
        seg = loaded["lesions"][key]
        segmentation = seg.GetSegmentation()
        assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == ["ground-glass opacity",
                                                                              "consolidation"]
        for name, code in (("ground-glass opacity", "DCM^112120^"), ("consolidation", "SCT^95436008^")):
            fields = mrml.terminology(segmentation.GetSegment(mrml.segment_id(seg, name))).split("~")
            assert len(fields) == 7 and fields[2].startswith(code) and "39607008" in fields[5]
        names = {value: segment[1] for value, segment in mrml.LESION_SEGMENTS.items()}
        np.testing.assert_array_equal(mrml.labels_from_segmentation(seg, ct_node, names), truth)
        assert seg.GetAttribute(mrml.ATTR_SOURCE) == ct_node.GetID()


def test_existing_lung_segmentation_as_lung_mask(scene, dicom_ct, dicom_mask, tmp_path):
    """A lung segmentation the user has (TotalSegmentator lobe names, plus a non-lung segment) becomes the worker's
    --lung-mask file: 1 right, 2 left on the CT grid, read back by read_lung_mask with the node's name."""
    from CovidCTScreenLib.errors import InputError
    from CovidCTScreenLib.lungs.lung_mask import read_lung_mask

    ct_node = mrml.ct_volume_to_node(dicom_ct, "ct", scene)
    labels = dicom_mask.labels
    lobes = np.zeros_like(labels)
    mid = labels.shape[0] // 2
    lobes[:mid][labels[:mid] == 1], lobes[mid:][labels[mid:] == 1] = 3, 4
    lobes[labels == 2] = 5
    lobes[(labels == 0) & (dicom_ct.hu > 300)] = 6
    segments = {3: ("a", "lung_lower_lobe_right", (1, 0, 0), ""), 4: ("b", "lung_upper_lobe_right", (1, 1, 0), ""),
                5: ("c", "lung_upper_lobe_left", (0, 1, 0), ""), 6: ("d", "vertebrae_T8", (1, 1, 1), "")}
    seg = mrml.labelmap_segmentation_node(lobes, dicom_ct.spacing, dicom_ct.origin, dicom_ct.direction, segments,
                                          "lobes", "TotalSegmentator", reference_node=ct_node, scene=scene)
    path = mrml.write_lung_mask_file(seg, ct_node, tmp_path / "lung_mask.nrrd")
    got = read_lung_mask(path, dicom_ct, seg.GetName())
    np.testing.assert_array_equal(got.labels, labels)
    assert got.source["source"] == "Slicer segmentation TotalSegmentator"
    saved = mrml.write_node(seg, tmp_path / "lobes.seg.nrrd")  # as Slicer saves it: the CLI's --lung-mask FILE
    np.testing.assert_array_equal(read_lung_mask(saved, dicom_ct).labels, labels)
    bones = mrml.labelmap_segmentation_node((lobes == 6).astype(np.uint8), dicom_ct.spacing, dicom_ct.origin,
                                            dicom_ct.direction, {1: ("d", "bone", (1, 1, 1), "")}, "bones", "bones",
                                            reference_node=ct_node, scene=scene)
    with pytest.raises(InputError, match="no lung segment"):
        mrml.write_lung_mask_file(bones, ct_node, tmp_path / "none.nrrd")
