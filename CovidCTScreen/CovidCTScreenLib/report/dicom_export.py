"""DICOM outputs for a DICOM input (highdicom): a DICOM SEG (right / left lung, GGO and consolidation by both
methods) referencing the source CT series, and a Comprehensive 3D SR (TID 1500 measurement report) with the
volumes, the lesion extents per lung and the study verdict. Both carry new UIDs, join the source study as new
series, and are written beside the report (never over the input files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..terminology import SEGMENT_CODES

SEG_NAME, SR_NAME = "dicom/segmentation.dcm", "dicom/measurements_sr.dcm"
SEG_SERIES_NUMBER, SR_SERIES_NUMBER = 9101, 9102
LOCAL_SCHEME = "99CVDCTS"  # private coding scheme (DICOM PS3.16 8.2: "99" prefix) for terms with no standard code


def _codes():
    """The segments' codes (``terminology.SEGMENT_CODES``, the table the Slicer segments use too) as highdicom
    ``CodedConcept``s: key -> (category, type, anatomic region or None)."""
    from highdicom.sr import CodedConcept

    return {key: tuple(CodedConcept(*c) if c else None for c in codes) for key, codes in SEGMENT_CODES.items()}


def _segments(result) -> list[tuple[str, str, np.ndarray, str]]:
    """(label, code key, mask (z, y, x) bool, algorithm) of every segment, in segment-number order."""
    out = [("right lung", "right lung", result.mask.labels == 1, "lung mask"),
           ("left lung", "left lung", result.mask.labels == 2, "lung mask")]
    found = result.manifestations
    if found is not None:
        for name, labels in (("HU bands", found.hu_bands), ("lesion UNet", found.learned)):
            if labels is None:  # the lesion UNet was not run
                continue
            out += [(f"GGO ({name})", "ggo", labels == 1, name),
                    (f"consolidation ({name})", "consolidation", labels == 2, name)]
    return out


def unreferenceable(headers) -> str | None:
    """Why a SEG / SR could not reference these source images (None when it can)."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not headers[0].get(keyword):
            return f"the source images have no {keyword}"
    uids = [h.get("SOPInstanceUID") for h in headers]
    if not all(uids) or len(set(uids)) < len(uids):
        return (f"the source images have {'empty' if not all(uids) else 'duplicate'} SOPInstanceUIDs "
                f"({len(set(uids))} distinct for {len(uids)} images): a SEG or SR cannot reference them")
    return None


def _complete(headers) -> list[str]:
    """Fill, in memory only, what anonymised sources leave out and SEG / SR need: empty type-2 patient and
    study attributes, and a frame of reference UID derived from the series UID (the same on every run).
    Returns notes for the report."""
    from pydicom.uid import generate_uid

    notes = []
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "StudyDate", "StudyTime"):
        if headers[0].get(keyword) is None:
            notes.append(f"{keyword} missing in the source: left empty")
            for h in headers:
                setattr(h, keyword, "")
    if not headers[0].get("FrameOfReferenceUID"):
        uid = generate_uid(entropy_srcs=[str(headers[0].SeriesInstanceUID), "frame of reference"])
        notes.append(f"FrameOfReferenceUID missing in the source: {uid} derived from the series UID")
        for h in headers:
            h.FrameOfReferenceUID = uid
    return notes


def _source_geometry(headers):
    """A SimpleITK image (no voxels needed) with the geometry of the source frames, in file order."""
    import SimpleITK as sitk

    first, last = headers[0], headers[-1]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    p0, p1 = np.array([float(v) for v in first.ImagePositionPatient]), np.array(
        [float(v) for v in last.ImagePositionPatient])
    step = np.linalg.norm(p1 - p0) / max(len(headers) - 1, 1)
    normal = (p1 - p0) / (step * max(len(headers) - 1, 1)) if len(headers) > 1 else np.cross(iop[:3], iop[3:])
    ref = sitk.Image(int(first.Columns), int(first.Rows), len(headers), sitk.sitkUInt8)
    rows_mm, cols_mm = (float(v) for v in first.PixelSpacing)
    ref.SetSpacing((cols_mm, rows_mm, float(step) or 1.0))
    ref.SetOrigin(tuple(p0))
    ref.SetDirection(tuple(np.column_stack([iop[:3], iop[3:], normal]).ravel()))
    return ref


def _in_source_frames(volume, mask: np.ndarray, reference) -> np.ndarray:
    """``mask`` (on the screened LPS grid) on the source frames, (frames, rows, columns) bool."""
    import SimpleITK as sitk

    image = sitk.Resample(volume.like(mask.astype(np.uint8)), reference, sitk.Transform(),
                          sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(image).astype(bool)


def _algorithm(name: str):
    from highdicom import AlgorithmIdentificationSequence
    from pydicom.sr.codedict import codes

    return AlgorithmIdentificationSequence(name=f"CovidCTScreen {name}"[:64],
                                           family=codes.cid7162.ArtificialIntelligence, version=__version__)


def write_dicom(result, report: dict, folder: Path) -> dict:
    """Write the SEG and the SR under ``folder``/dicom and say so in ``report["dicom_outputs"]``; return the
    report's ``files`` entries (none, with the reason in the report, when the sources cannot be referenced)."""
    import highdicom as hd
    import pydicom

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in result.volume.dicom_files]
    reason = unreferenceable(headers)
    if reason:
        report["dicom_outputs"] = {"not_written": reason}
        return {}
    notes = _complete(headers)
    reference = _source_geometry(headers)
    codes = _codes()
    segments = _segments(result)
    pixels = np.stack([_in_source_frames(result.volume, m, reference) for _, _, m, _ in segments], axis=-1)
    descriptions = []
    for number, (label, key, _, algorithm) in enumerate(segments, start=1):
        category, prop, region = codes[key]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(algorithm), tracking_uid=hd.UID(), tracking_id=label,
            anatomic_regions=[region] if region is not None else None))
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="CovidCTScreen",
        manufacturer_model_name="CovidCTScreen (research use only)", software_versions=__version__,
        device_serial_number="none", content_label="COVIDCT", series_description="CovidCTScreen segments (research)",
        content_description="Lungs, GGO, consolidation (research use only)")
    sr = _measurement_sr(result, report, headers, seg, segments)
    (folder / "dicom").mkdir()
    seg.save_as(folder / SEG_NAME)
    sr.save_as(folder / SR_NAME)
    report["dicom_outputs"] = {"seg": SEG_NAME, "sr": SR_NAME, "source_series": str(headers[0].SeriesInstanceUID),
                               "seg_series": str(seg.SeriesInstanceUID), "sr_series": str(sr.SeriesInstanceUID),
                               "notes": notes}
    return {"dicom_seg": SEG_NAME, "dicom_sr": SR_NAME}


def _measurement_sr(result, report: dict, headers, seg, segments):
    """Comprehensive 3D SR, TID 1500: volume of every segment, lesion % per lung, and the verdict."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    voxel_ml = float(np.prod(result.volume.spacing)) / 1000.0
    per_lung = report.get("manifestations", {})
    groups = []
    for number, (label, key, mask, algorithm) in enumerate(segments, start=1):
        measurements = [hd.sr.Measurement(name=codes.SCT.Volume, value=round(float(mask.sum()) * voxel_ml, 2),
                                          unit=CodedConcept("mL", "UCUM", "milliliter"))]
        method = "hu_bands" if "HU bands" in label else "learned" if "UNet" in label else None
        if method and method in per_lung:
            for side in ("right", "left"):
                pct = per_lung[method]["per_lung"][side][f"{'ggo' if key == 'ggo' else 'consolidation'}_pct"]
                measurements.append(hd.sr.Measurement(
                    name=CodedConcept(f"pct-{side}", LOCAL_SCHEME, f"Extent in % of measured {side} lung"),
                    value=float(pct), unit=codes.UCUM.Percent))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(headers[0].SeriesInstanceUID)),
            finding_type=_codes()[key][1], algorithm_id=hd.sr.AlgorithmIdentification(
                name=f"CovidCTScreen {algorithm}"[:64], version=__version__),
            measurements=measurements))
    verdict = report["verdict"]
    label = str(verdict.get("category") or verdict["label"])
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="study verdict (research use only)"),
        algorithm_id=hd.sr.AlgorithmIdentification(name=f"CovidCTScreen {result.model.name}"[:64],
                                                   version=__version__),
        measurements=[hd.sr.Measurement(
            name=CodedConcept("pos-fraction", LOCAL_SCHEME, "Fraction of lung slices at the COVID-19 threshold"),
            value=round(100 * float(verdict["positive_fraction"]), 2), unit=codes.UCUM.Percent)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            name=CodedConcept("verdict", LOCAL_SCHEME, "CovidCTScreen study verdict (research use only)"),
            value=CodedConcept(label.upper().replace(" ", "-")[:16], LOCAL_SCHEME, label[:64]))]))
    report_content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=hd.UID(), name="CovidCTScreen", model_name=f"model {result.model.name}"[:64]))),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport)
    return hd.sr.Comprehensive3DSR(
        evidence=[*headers, seg], content=report_content[0], series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="CovidCTScreen", series_description="CovidCTScreen measurements (research)")
