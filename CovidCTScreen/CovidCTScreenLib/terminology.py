"""The one table of codes for the segments every output names: right / left lung (SNOMED CT) and the lesions,
ground-glass opacity (DICOM CID 6104) and consolidation (SNOMED CT). Plain data: the DICOM SEG writer makes
highdicom ``CodedConcept``s of it (``report.dicom_export``), the Slicer glue makes terminology strings of it
(``slicer_terminology``, used by ``slicer_glue.mrml``).
"""

from __future__ import annotations

# (code value, coding scheme, meaning)
ANATOMICAL_STRUCTURE = ("123037004", "SCT", "Anatomical Structure")
ALTERED_STRUCTURE = ("49755003", "SCT", "Morphologically Altered Structure")
LUNG = ("39607008", "SCT", "Lung")

# segment key -> (category, type, anatomic region or None)
SEGMENT_CODES = {
    "right lung": (ANATOMICAL_STRUCTURE, ("3341006", "SCT", "Right lung"), None),
    "left lung": (ANATOMICAL_STRUCTURE, ("44029006", "SCT", "Left lung"), None),
    "ggo": (ALTERED_STRUCTURE, ("112120", "DCM", "Ground glass opacity"), LUNG),
    "consolidation": (ALTERED_STRUCTURE, ("95436008", "SCT", "Lung consolidation"), LUNG),
}


def slicer_terminology(key: str) -> str:
    """Slicer's terminology entry of a segment: 7 '~'-separated fields (context~category~type~type modifier~
    anatomic context~anatomic region~region modifier), each code written scheme^value^meaning."""
    category, kind, region = SEGMENT_CODES[key]

    def code(c):
        return f"{c[1]}^{c[0]}^{c[2]}" if c else "^^"

    return (f"Segmentation category and type - DICOM master list~{code(category)}~{code(kind)}~^^"
            f"~Anatomic codes - DICOM master list~{code(region)}~^^")
