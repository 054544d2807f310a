"""Arrays <-> MRML nodes: the only file of CovidCTScreenLib that imports ``slicer``.

Works on a plain ``slicer.vtkMRMLScene()`` (slicer-core from PyPI, no application, no Qt), so it is
tested with pytest. Geometry convention: the core keeps SimpleITK's LPS geometry (spacing (x, y, z),
origin, 3x3 row-major direction) and (z, y, x) arrays; MRML keeps an IJK-to-RAS matrix. The two
differ by a flip of the first two physical axes:

    RAS = diag(-1, -1, 1) @ (origin + direction @ diag(spacing) @ ijk)

Every function takes the scene explicitly (default ``slicer.mrmlScene``) and creates nodes only on
success: a failure removes what it added, so no half-made nodes stay in the scene.
"""

from __future__ import annotations

import csv
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import slicer
import vtk

from ..errors import InputError
from ..input.volume_io import CTVolume
from ..terminology import slicer_terminology

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
SEGMENTS = {1: ("right_lung", "right lung", (0.50, 0.68, 0.85)),
            2: ("left_lung", "left lung", (0.85, 0.60, 0.45))}
# Slicer terminology entries of the segments, from the one code table (terminology.SEGMENT_CODES)
LUNG_TERMINOLOGY = {1: slicer_terminology("right lung"), 2: slicer_terminology("left lung")}
LESION_SEGMENTS = {1: ("ggo", "ground-glass opacity", (0.35, 0.85, 0.35), slicer_terminology("ggo")),
                   2: ("consolidation", "consolidation", (0.90, 0.25, 0.25), slicer_terminology("consolidation"))}
HEATMAP_COLOR_NAME = "CovidCT Inferno"
HEATMAP_DISPLAY_MIN = 0.05  # heatmap values below this are transparent in the slice views
# matplotlib "inferno" sampled at 0, 1/8, ..., 1 (perceptually uniform, readable in grey)
_INFERNO = [(0.001, 0.0, 0.014), (0.129, 0.047, 0.291), (0.342, 0.062, 0.429), (0.541, 0.135, 0.415),
            (0.736, 0.216, 0.33), (0.894, 0.353, 0.194), (0.978, 0.558, 0.035), (0.975, 0.798, 0.206),
            (0.988, 0.998, 0.645)]
ATTR_SOURCE = "CovidCTScreen.SourceVolumeID"
ATTR_ROLE = "CovidCTScreen.Role"


def _nodes_by_class(scene, class_name: str) -> list:
    collection = scene.GetNodesByClass(class_name)
    collection.UnRegister(None)  # GetNodesByClass returns a new reference (as slicer.util.getNodesByClass)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def _scene(scene=None):
    scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise RuntimeError("no MRML scene: pass scene= or set slicer.mrmlScene")
    return scene


@contextmanager
def _all_or_nothing(scene):
    """Remove every node added inside the block when the block raises."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    except BaseException:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node is not None and node.GetID() not in before and scene.IsNodePresent(node):
                scene.RemoveNode(node)
        raise


# --------------------------------------------------------------------------- geometry

def ijk_to_ras(spacing, origin, direction) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of an LPS geometry (spacing x, y, z; row-major 3x3 direction)."""
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    m[:3, 3] = LPS_TO_RAS @ np.asarray(origin, float)
    return m


def lps_geometry(ijk_to_ras_matrix: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) in LPS from a 4x4 IJK-to-RAS matrix."""
    m = np.asarray(ijk_to_ras_matrix, float)
    lps = LPS_TO_RAS @ m[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = LPS_TO_RAS @ m[:3, 3]
    return tuple(float(s) for s in spacing), tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel())


def _vtk_matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def _np_matrix(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_ijk_to_ras(node) -> np.ndarray:
    """IJK-to-RAS of a volume node in world coordinates (a linear parent transform is applied)."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    matrix = _np_matrix(m)
    transform = node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise InputError(f"Volume '{node.GetName()}' is under a non-linear transform; harden the transform "
                             f"(Data module, right-click > Harden transform) before screening")
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        matrix = _np_matrix(to_world) @ matrix
    return matrix


def slice_center_ras(spacing, origin, direction, shape_zyx, k: int) -> np.ndarray:
    """RAS point at the centre of axial slice ``k`` of a (z, y, x) grid."""
    ijk = np.array([(shape_zyx[2] - 1) / 2.0, (shape_zyx[1] - 1) / 2.0, float(k), 1.0])
    return (ijk_to_ras(spacing, origin, direction) @ ijk)[:3]


# --------------------------------------------------------------------------- volumes

def ct_volume_from_node(node) -> CTVolume:
    """A CTVolume (copied HU array, LPS geometry) from a scalar volume node; the node is not modified."""
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError("Select a CT scalar volume as input (not a label map, segmentation or vector volume)")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"Volume '{node.GetName()}' holds no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"Volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components per "
                         f"voxel (colour or vector image); a CT has one")
    spacing, origin, direction = lps_geometry(node_ijk_to_ras(node))
    hu = np.array(slicer.util.arrayFromVolume(node), dtype=np.float32, copy=True)
    return CTVolume(hu=hu, spacing=spacing, origin=origin, direction=direction, source=node.GetName(),
                    meta={"format": "MRML", "mrml_node_id": node.GetID()})


def update_volume_node(node, array: np.ndarray, spacing, origin, direction):
    """Put a (z, y, x) array with an LPS geometry into ``node``."""
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(spacing, origin, direction)))
    return node


def volume_node_from_array(array: np.ndarray, spacing, origin, direction, name: str, scene=None,
                           class_name: str = "vtkMRMLScalarVolumeNode", node=None, display: bool = True):
    """A new (or the given) volume node holding ``array`` with the LPS geometry, with display nodes."""
    scene = _scene(scene)
    with _all_or_nothing(scene):
        if node is None:
            node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
        update_volume_node(node, array, spacing, origin, direction)
        if display and node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
    return node


def ct_volume_to_node(volume: CTVolume, name: str | None = None, scene=None):
    """A scalar volume node of a CTVolume (HU, shown in the lung window)."""
    node = volume_node_from_array(volume.hu, volume.spacing, volume.origin, volume.direction,
                                  name or Path(volume.source).name.split(".")[0] or "CT", scene)
    display = node.GetDisplayNode()
    if display is not None:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(1500.0, -600.0)
    return node


def write_volume_file(node, path) -> Path:
    """Write a volume node (its own voxel type, world geometry) as NRRD/MHA/NIfTI for the worker."""
    import SimpleITK as sitk

    spacing, origin, direction = lps_geometry(node_ijk_to_ras(node))
    image = sitk.GetImageFromArray(np.ascontiguousarray(slicer.util.arrayFromVolume(node)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=False)
    return Path(path)


# --------------------------------------------------------------------------- heatmap

def heatmap_color_node(scene=None):
    """The 256-entry inferno colour table for heatmaps (created once per scene)."""
    scene = _scene(scene)
    existing = scene.GetFirstNodeByName(HEATMAP_COLOR_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEATMAP_COLOR_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    node.SetNamesInitialised(True)
    anchors = np.linspace(0.0, 1.0, len(_INFERNO))
    rgb = np.array(_INFERNO)
    for i in range(256):
        x = i / 255.0
        r, g, b = (float(np.interp(x, anchors, rgb[:, c])) for c in range(3))
        node.SetColor(i, f"{x:.3f}", r, g, b, 1.0)
    node.SetAttribute("Category", "CovidCTScreen")
    return node


def heatmap_node(heat: np.ndarray, spacing, origin, direction, name: str = "COVID heatmap", scene=None,
                 node=None, source_node=None):
    """Grad-CAM heatmap ([0, 1], CT grid) as a scalar volume coloured by the inferno table;
    values below ``HEATMAP_DISPLAY_MIN`` are thresholded away so only the hot regions cover the CT."""
    scene = _scene(scene)
    with _all_or_nothing(scene):
        node = volume_node_from_array(np.asarray(heat, np.float32), spacing, origin, direction, name, scene,
                                      node=node)
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(heatmap_color_node(scene).GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetThreshold(HEATMAP_DISPLAY_MIN, 1.0)
        display.ApplyThresholdOn()
        display.SetInterpolate(True)
        node.SetAttribute(ATTR_ROLE, "heatmap")
        if source_node is not None:
            node.SetAttribute(ATTR_SOURCE, source_node.GetID())
    return node


def show_heatmap(ct_node, heat_node, opacity: float = 0.4, scene=None) -> int:
    """CT as background and the heatmap as foreground in every slice view; returns views updated."""
    scene = _scene(scene)
    count = 0
    for comp in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        comp.SetBackgroundVolumeID(ct_node.GetID() if ct_node is not None else None)
        comp.SetForegroundVolumeID(heat_node.GetID() if heat_node is not None else None)
        comp.SetForegroundOpacity(float(opacity))
        count += 1
    return count


def set_heatmap_opacity(opacity: float, scene=None) -> None:
    scene = _scene(scene)
    for comp in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        comp.SetForegroundOpacity(float(opacity))


def jump_slices_to(ras, scene=None) -> int:
    """Move every slice view to the RAS point (each view along its own normal); returns views moved."""
    scene = _scene(scene)
    slice_nodes = _nodes_by_class(scene, "vtkMRMLSliceNode")
    for slice_node in slice_nodes:
        slice_node.JumpSliceByOffsetting(float(ras[0]), float(ras[1]), float(ras[2]))
    return len(slice_nodes)


# --------------------------------------------------------------------------- lung segmentation

def lung_segmentation_node(labels: np.ndarray, spacing, origin, direction, name: str = "Lungs",
                           reference_node=None, scene=None, node=None):
    """Segmentation node with "right lung" (label 1) and "left lung" (label 2) segments, SNOMED CT
    terminology, and the CT as reference geometry."""
    segments = {v: (*SEGMENTS[v], LUNG_TERMINOLOGY[v]) for v in SEGMENTS}
    return labelmap_segmentation_node(labels, spacing, origin, direction, segments, "lung mask", name,
                                      reference_node, scene, node)


def lesion_segmentation_node(labels: np.ndarray, spacing, origin, direction, name: str = "Lesions",
                             reference_node=None, scene=None, node=None):
    """Editable segmentation with "ground-glass opacity" (label 1) and "consolidation" (label 2) segments."""
    return labelmap_segmentation_node(labels, spacing, origin, direction, LESION_SEGMENTS, "lesions", name,
                                      reference_node, scene, node)


def labelmap_segmentation_node(labels: np.ndarray, spacing, origin, direction, segments: dict, role: str,
                               name: str, reference_node=None, scene=None, node=None):
    """Segmentation node from a label map: one segment per ``segments`` entry (value -> id, name, colour,
    terminology), always all of them (empty where the label is absent), the CT as reference geometry."""
    scene = _scene(scene)
    labels = np.asarray(labels)
    with _all_or_nothing(scene):
        labelmap = volume_node_from_array(labels.astype(np.uint8), spacing, origin, direction, f"{role}-tmp", scene,
                                          class_name="vtkMRMLLabelMapVolumeNode", display=False)
        try:
            if node is None:
                node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
            node.GetSegmentation().RemoveAllSegments()
            if node.GetDisplayNode() is None:
                node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node or labelmap)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node):
                raise RuntimeError(f"importing the {role} label map into the segmentation failed")
        finally:
            scene.RemoveNode(labelmap)
        segmentation = node.GetSegmentation()
        present = set(np.unique(labels).tolist()) - {0}
        for i in range(segmentation.GetNumberOfSegments()):
            seg_id = segmentation.GetNthSegmentID(i)
            segment = segmentation.GetSegment(seg_id)
            value = segment.GetLabelValue()
            if value not in segments:
                raise RuntimeError(f"unexpected label {value} in the {role}")
            _, seg_name, color, entry = segments[value]
            segment.SetName(seg_name)
            segment.SetColor(*color)
            set_terminology(segment, entry)
        for value in sorted(set(segments) - present):  # every segment exists, empty where nothing was found
            seg_key, seg_name, color, entry = segments[value]
            seg_id = segmentation.AddEmptySegment(seg_key, seg_name, color)
            set_terminology(segmentation.GetSegment(seg_id), entry)
        node.SetAttribute(ATTR_ROLE, role)
        if reference_node is not None:
            node.SetAttribute(ATTR_SOURCE, reference_node.GetID())
    return node


def set_terminology(segment, entry: str) -> None:
    if hasattr(segment, "SetTerminology"):  # Slicer >= 5.4
        segment.SetTerminology(entry)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName() if hasattr(segment, "GetTerminologyEntryTagName")
                       else "TerminologyEntry", entry)


def terminology(segment) -> str:
    if hasattr(segment, "GetTerminology"):
        return segment.GetTerminology()
    value = vtk.reference("")
    segment.GetTag("TerminologyEntry", value)
    return str(value)


def segment_id(seg_node, segment_name: str) -> str:
    return seg_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)


def labels_from_segmentation(seg_node, reference_node, segments: dict | None = None) -> np.ndarray:
    """(z, y, x) uint8 labels of the segments on ``reference_node``'s grid; ``segments`` maps label value to
    segment name (default: the lungs, 1 right, 2 left)."""
    scene = seg_node.GetScene()
    out = None
    for value, seg_name in (segments or {v: seg[1] for v, seg in SEGMENTS.items()}).items():
        sid = segment_id(seg_node, seg_name)
        if not sid:
            raise InputError(f"Segmentation '{seg_node.GetName()}' has no '{seg_name}' segment")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(sid)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__lung_export__")
        try:
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, labelmap,
                                                                                       reference_node):
                raise RuntimeError(f"exporting segment '{seg_name}' failed")
            arr = slicer.util.arrayFromVolume(labelmap)
            if out is None:
                out = np.zeros(arr.shape, np.uint8)
            out[arr > 0] = value
        finally:
            scene.RemoveNode(labelmap)
    return out


def write_lung_mask_file(seg_node, reference_node, path) -> Path:
    """Write the lung segments of a segmentation the user has (Lung CT Segmenter, TotalSegmentator, ...:
    segments named like 'right lung', 'left lung' or 'lung_upper_lobe_right') as a label map, 1 right,
    2 left, on ``reference_node``'s (the CT's) grid: the file the worker reads with ``--lung-mask``.
    Lung segments without a side ('lungs') are written as 1 + 2 = binary, split by the worker."""
    import SimpleITK as sitk

    from ..lungs.lung_mask import segment_side

    segmentation = seg_node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    sided = {name: segment_side(name) for name in names}
    unsided = [n for n in names if not sided[n] and ("lung" in n.lower())]
    if not any(sided.values()) and not unsided:
        raise InputError(f"Segmentation '{seg_node.GetName()}' has no lung segment (names like 'right lung', "
                         f"'left lung' or 'lung_upper_lobe_right'; it has: {', '.join(names) or 'none'})")
    labels = None
    for name in names:
        value = sided[name] or (3 if name in unsided and not any(sided.values()) else 0)
        if value:
            part = labels_from_segmentation(seg_node, reference_node, {value: name})
            labels = part if labels is None else np.where(labels > 0, labels, part)
    spacing, origin, direction = lps_geometry(node_ijk_to_ras(reference_node))
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)


# --------------------------------------------------------------------------- slice scores

LESION_COLUMN_METHODS = {"unet": "lesion UNet", "hu_bands": "HU bands"}  # slice_scores.csv prefix: name
LESION_COLUMN_KINDS = {"lesion": "lesion", "ggo": "GGO", "consolidation": "consolidation"}


def lesion_column_name(csv_column: str) -> str:
    """The table's name of a slice_scores.csv lesion column: ``unet_lesion_pct_of_lung`` -> ``lesion % (lesion
    UNet)``."""
    for prefix, method in LESION_COLUMN_METHODS.items():
        for kind, name in LESION_COLUMN_KINDS.items():
            if csv_column == f"{prefix}_{kind}_pct_of_lung":
                return f"{name} % ({method})"
    raise ValueError(f"not a lesion column of slice_scores.csv: {csv_column}")


def scores_table_node(slice_indices, probabilities, labels: list[str], slice_threshold: float,
                      z_mm=None, positive_index: int = 1, name: str = "COVID slice scores", scene=None, node=None,
                      instance_numbers=None, lesions: dict | None = None):
    """Table: slice, z_mm, DICOM instance number (when known), one probability column per class (``P(<label>)``),
    positive (0/1), threshold, and the per-slice lesion columns of slice_scores.csv when given (``lesions``:
    {csv column: values}, named by ``lesion_column_name``, unit %)."""
    scene = _scene(scene)
    slice_indices = np.asarray(slice_indices, int)
    probabilities = np.asarray(probabilities, float).reshape(len(slice_indices), len(labels))
    with _all_or_nothing(scene):
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
        node.RemoveAllColumns()
        table = node.GetTable()

        def add(cls, col_name, values):
            arr = cls()
            arr.SetName(col_name)
            for v in values:
                arr.InsertNextValue(v)
            table.AddColumn(arr)

        add(vtk.vtkIntArray, "slice", slice_indices.tolist())
        add(vtk.vtkDoubleArray, "z_mm", (np.full(len(slice_indices), np.nan) if z_mm is None
                                        else np.asarray(z_mm, float)).tolist())
        if instance_numbers is not None and any(n is not None for n in instance_numbers):
            add(vtk.vtkIntArray, "instance", [-1 if n is None else int(n) for n in instance_numbers])
            node.SetColumnDescription("instance", "DICOM InstanceNumber of the slice (as viewers show it)")
        for c, lab in enumerate(labels):
            add(vtk.vtkDoubleArray, f"P({lab})", probabilities[:, c].tolist())
        pos = probabilities[:, positive_index]
        add(vtk.vtkIntArray, "positive", (pos >= slice_threshold).astype(int).tolist())
        add(vtk.vtkDoubleArray, "threshold", [float(slice_threshold)] * len(slice_indices))
        for column, values in (lesions or {}).items():
            add(vtk.vtkDoubleArray, lesion_column_name(column), np.asarray(values, float).tolist())
            node.SetColumnUnitLabel(lesion_column_name(column), "%")
            node.SetColumnDescription(lesion_column_name(column), "% of the slice's measured lung (lung mask less "
                                                                  "its 2 mm rim)")
        for lab in labels:
            node.SetColumnDescription(f"P({lab})", "slice classifier probability; not validated on HU CT")
        node.SetColumnDescription("slice", "axial slice index k (inferior to superior, LPS order)")
        node.SetColumnUnitLabel("z_mm", "mm")
        node.SetColumnDescription("positive", "1 when P(positive class) reaches the slice threshold")
        node.SetAttribute(ATTR_ROLE, "slice scores")
        node.Modified()
    return node


def scores_plot_nodes(table_node, y_column: str, name: str = "COVID slice scores", scene=None, chart=None):
    """Plot chart with the score-vs-slice series and the slice-threshold line; returns (chart, series, threshold)."""
    scene = _scene(scene)
    with _all_or_nothing(scene):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(y_column))
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("slice")
        series.SetYColumnName(y_column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetColor(0.85, 0.33, 0.1)
        threshold = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName("slice threshold"))
        threshold.SetAndObserveTableNodeID(table_node.GetID())
        threshold.SetXColumnName("slice")
        threshold.SetYColumnName("threshold")
        threshold.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeLine)
        threshold.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        threshold.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
        threshold.SetColor(0.6, 0.6, 0.6)
        series.SetAttribute(ATTR_ROLE, "slice scores series")
        threshold.SetAttribute(ATTR_ROLE, "slice scores series")
        chart = _chart_with(scene, chart, name, [series, threshold], "slice scores series")
        chart.SetTitle(f"{y_column} per axial slice")
        chart.SetXAxisTitle("axial slice index (inferior -> superior)")
        chart.SetYAxisTitle(y_column)
        chart.SetYAxisRangeAuto(False)
        chart.SetYAxisRange(0.0, 1.0)
        chart.SetAttribute(ATTR_ROLE, "slice scores chart")
    return chart, series, threshold


def _chart_with(scene, chart, name: str, series: list, role: str):
    """``chart`` (a new plot chart node when None) showing exactly ``series``; series of ``role`` that an earlier
    run of this module put on a reused chart are removed from the scene."""
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    old = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    chart.RemoveAllPlotSeriesNodeIDs()
    for node in old:
        if node is not None and node.GetAttribute(ATTR_ROLE) == role:
            scene.RemoveNode(node)
    for s in series:
        chart.AddAndObservePlotSeriesNodeID(s.GetID())
    return chart


def lesion_plot_nodes(table_node, columns: list[str], name: str = "lesion % per slice", scene=None, chart=None):
    """Plot chart of the per-slice lesion % columns of ``table_node`` (``columns``: table column names, lead
    method first, drawn solid; the others dashed); returns (chart, series list)."""
    scene = _scene(scene)
    with _all_or_nothing(scene):
        series = []
        for n, column in enumerate(columns):
            s = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(column))
            s.SetAndObserveTableNodeID(table_node.GetID())
            s.SetXColumnName("slice")
            s.SetYColumnName(column)
            s.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            s.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle if n == 0 else
                             slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            s.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleSolid if n == 0 else
                           slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
            s.SetColor(*((0.75, 0.22, 0.17) if n == 0 else (0.18, 0.49, 0.2)))
            s.SetAttribute(ATTR_ROLE, "lesion series")
            series.append(s)
        chart = _chart_with(scene, chart, name, series, "lesion series")
        chart.SetTitle("lesion % of the slice's lung per axial slice")
        chart.SetXAxisTitle("axial slice index (inferior -> superior)")
        chart.SetYAxisTitle("lesion % of the slice's lung")
        chart.SetAttribute(ATTR_ROLE, "lesion chart")
    return chart, series


# --------------------------------------------------------------------------- subject hierarchy

def place_in_study(nodes, input_node, scene=None) -> int | None:
    """Put ``nodes`` beside ``input_node`` in the subject hierarchy: under its study when there is one
    (needed for DICOM SEG export), otherwise under its parent folder. Returns the parent item or None."""
    scene = _scene(scene)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None or input_node is None:
        return None
    item = sh.GetItemByDataNode(input_node)
    if not item:
        return None
    parent = sh.GetItemParent(item)
    probe = parent
    study_level = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy()
    while probe and probe != sh.GetSceneItemID():
        if sh.GetItemLevel(probe) == study_level:
            parent = probe
            break
        probe = sh.GetItemParent(probe)
    if not parent or parent == sh.GetSceneItemID():
        return None
    for node in nodes:
        if node is None:
            continue
        child = sh.GetItemByDataNode(node) or sh.CreateItem(parent, node)
        sh.SetItemParent(child, parent)
    return parent


# --------------------------------------------------------------------------- storage

def write_node(node, path) -> Path:
    """Save a node with its default storage node (.nrrd volume, .seg.nrrd segmentation, .tsv/.csv table)."""
    path = Path(path)
    storage = node.GetStorageNode()
    if storage is None:
        storage = node.CreateDefaultStorageNode()
        node.GetScene().AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"writing {node.GetName()} to {path} failed")
    return path


def read_node(path, class_name: str, name: str | None = None, scene=None):
    """Read a file into a new node of ``class_name`` with that class's default storage node."""
    scene = _scene(scene)
    with _all_or_nothing(scene):
        node = scene.AddNewNodeByClass(class_name, name or Path(path).name.split(".")[0])
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise InputError(f"Cannot read {path} as {class_name}")
        if node.IsA("vtkMRMLDisplayableNode") and node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
    return node


# --------------------------------------------------------------------------- report folder -> nodes

def _read_image(path: Path):
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def read_slice_scores(csv_path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], dict]:
    """(slice indices, z_mm, (N, C) probabilities, class names, {lesion column: values}) from a report's
    slice_scores.csv; the lesion dict is empty when lesions were not measured."""
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    pcols = [i for i, h in enumerate(header) if h.startswith("p_")]
    slices = np.array([int(r[0]) for r in body], int)
    z_mm = np.array([float(r[1]) for r in body], float)
    probs = np.array([[float(r[i]) for i in pcols] for r in body], float).reshape(len(body), len(pcols))
    lesions = {h: np.array([float(r[i]) for r in body]) for i, h in enumerate(header) if h.endswith("_pct_of_lung")}
    return slices, z_mm, probs, [header[i][2:] for i in pcols], lesions


def load_report_folder(out_dir, ct_node=None, prefix: str | None = None, scene=None,
                       heatmap_opacity: float | None = None, segmentation_node=None, heatmap_volume_node=None,
                       table_node=None, chart_node=None, lesion_chart_node=None) -> dict:
    """Nodes from a report folder written by ``report.write_report``: lung segmentation, heatmap volume,
    slice-score table (with the per-slice lesion % columns when measured) and charts, placed beside ``ct_node``
    in the subject hierarchy. New nodes are created unless existing ones are passed (``*_node``); new nodes are
    removed again on failure.

    Returns {"report": dict, "segmentation", "heatmap" (or None), "table", "chart", "series", "lesion_chart" and
    "lesion_series" (lesion % per slice, lead method first; None and [] without lesions), "lesions"
    ({"lesions_learned", "lesions_hu_bands"}: editable GGO / consolidation segmentations, when measured)}.
    """
    scene = _scene(scene)
    out_dir = Path(out_dir)
    report = json.loads((out_dir / "report.json").read_text())
    prefix = prefix or (ct_node.GetName() if ct_node is not None else "CT")
    files = report.get("files", {})
    labels_pos = [k for k in report["slices"][0]["probabilities"]] if report.get("slices") else []
    with _all_or_nothing(scene):
        labels, spacing, origin, direction = _read_image(out_dir / files.get("lung_mask", "lung_mask.nrrd"))
        seg = lung_segmentation_node(labels, spacing, origin, direction, f"{prefix} lungs",
                                     reference_node=ct_node, scene=scene, node=segmentation_node)
        lesions = {}
        for key, title in (("lesions_learned", "lesions (UNet)"), ("lesions_hu_bands", "lesions (HU bands)")):
            if key in files:
                larr, ls_, lo, ld = _read_image(out_dir / files[key])
                lesions[key] = lesion_segmentation_node(larr, ls_, lo, ld, f"{prefix} {title}",
                                                        reference_node=ct_node, scene=scene)
        heat = None
        if "heatmap" in files:
            harr, hs, ho, hd = _read_image(out_dir / files["heatmap"])
            heat = heatmap_node(harr, hs, ho, hd, f"{prefix} COVID heatmap", scene, node=heatmap_volume_node,
                                source_node=ct_node)
        slices, z_mm, probs, _, lesion_columns = read_slice_scores(out_dir / files.get("slice_scores",
                                                                                     "slice_scores.csv"))
        class_names = labels_pos or [f"class {i}" for i in range(probs.shape[1])]
        positive_name = "COVID-19" if "COVID-19" in class_names else class_names[-1]
        pos_index = class_names.index(positive_name)
        verdict = report["verdict"]
        numbers = {s["slice"]: s.get("instance_number") for s in report.get("slices", [])}
        table = scores_table_node(slices, probs, class_names, verdict["slice_threshold"], z_mm, pos_index,
                                  f"{prefix} COVID slice scores", scene, node=table_node,
                                  instance_numbers=[numbers.get(int(k)) for k in slices], lesions=lesion_columns)
        chart, series, _ = scores_plot_nodes(table, f"P({positive_name})", f"{prefix} COVID slice scores", scene,
                                             chart=chart_node)
        lesion_chart, lesion_series = None, []
        totals = [c for c in lesion_columns if c.endswith("_lesion_pct_of_lung")]  # unet first, as in the CSV
        if totals:
            lesion_chart, lesion_series = lesion_plot_nodes(table, [lesion_column_name(c) for c in totals],
                                                            f"{prefix} lesion % per slice", scene,
                                                            chart=lesion_chart_node)
        for n in (seg, heat, table, chart, lesion_chart, *lesions.values()):
            if n is not None and ct_node is not None:
                n.SetAttribute(ATTR_SOURCE, ct_node.GetID())
        place_in_study([seg, heat, table, chart, lesion_chart, *lesions.values()], ct_node, scene)
        if heat is not None and heatmap_opacity is not None:
            show_heatmap(ct_node, heat, heatmap_opacity, scene)
    return {"report": report, "segmentation": seg, "heatmap": heat, "table": table, "chart": chart, "lesions": lesions,
            "series": series, "lesion_chart": lesion_chart, "lesion_series": lesion_series, "slice_indices": slices, "probabilities": probs, "class_names": class_names,
            "positive_index": pos_index, "geometry": (spacing, origin, direction, labels.shape)}
