"""Labelled CT volumes on disk: the COVID-CT-MD layout and a generic studies CSV.

Each study gives its path (DICOM series folder or volume file), a study label (``STUDY_LABELS``), a patient id
and, where known, per-slice infection labels keyed by the slice's patient z position (mm, DICOM / LPS patient
coordinates, superior positive). ``Study.labels_for(volume)`` aligns them to the slices of
``volume_io.load_ct`` (LPS index order, inferior -> superior) by physical position, never by file order.
Headers are read with pydicom (``stop_before_pixels``); no SimpleITK or torch here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import _read_csv
from ..errors import InputError

STUDY_LABELS = ("COVID-19", "other pneumonia", "normal", "non-COVID-19")
_ALIASES = {"covid-19": "COVID-19", "covid": "COVID-19", "covid19": "COVID-19",
            "cap": "other pneumonia", "other pneumonia": "other pneumonia", "pneumonia": "other pneumonia",
            "community-acquired pneumonia": "other pneumonia", "normal": "normal",
            "non-covid-19": "non-COVID-19", "noncovid": "non-COVID-19", "non-covid": "non-COVID-19"}
MD_SLICE_LABELS = "Slice-level-labels-updated-1.npy"
MD_LOBE_LABELS = "Lobe-level-labels-updated-1.npy"


def study_label(name: str, where: str) -> str:
    """The canonical study label of ``name`` (COVID-19 / CAP / normal and their usual spellings)."""
    label = _ALIASES.get(name.strip().lower())
    if label is None:
        raise InputError(f"{where}: study label {name!r} is not one of COVID-19, CAP / other pneumonia, normal, "
                         f"non-COVID-19")
    return label


@dataclass(frozen=True)
class Study:
    path: Path  # DICOM series folder or volume file
    label: str  # one of STUDY_LABELS
    patient: str
    slice_z: np.ndarray | None = None  # (n,) patient z (mm) of the labelled slices, ascending
    slice_labels: np.ndarray | None = None  # (n,) 0/1 infection per slice, same order
    lobe_labels: np.ndarray | None = None  # (n, 5) 0/1 per lobe in the data set's order (COVID-CT-MD only)

    def labels_for(self, volume) -> np.ndarray:
        """Per-slice labels (0/1) for each slice k of ``volume`` (a ``CTVolume``), -1 where unlabelled.

        Slices are matched by physical z within half a slice spacing; a labelled slice that matches no slice
        of the volume is an error (the labels belong to another series)."""
        out = np.full(volume.hu.shape[0], -1, dtype=np.int8)
        if self.slice_labels is None:
            return out
        z = volume.origin[2] + np.arange(volume.hu.shape[0]) * volume.spacing[2] * volume.direction[8]
        nearest = np.abs(self.slice_z[:, None] - z[None]).argmin(axis=1)
        off = np.abs(z[nearest] - self.slice_z)
        if off.max() > volume.spacing[2] / 2:
            raise InputError(f"{self.path}: labelled slice at z {self.slice_z[off.argmax()]:.1f} mm matches no "
                             f"slice of the volume (nearest {z[nearest[off.argmax()]]:.1f} mm)")
        if len(set(nearest.tolist())) != len(nearest):
            raise InputError(f"{self.path}: two labelled slices fall on the same slice of the volume")
        out[nearest] = self.slice_labels
        return out


def _dicom_positions(folder: Path, names: list[str] | None = None) -> dict[str, tuple[float, int | None]]:
    """File name -> (patient z of ImagePositionPatient, InstanceNumber) of the DICOM files in ``folder``."""
    import pydicom

    files = [folder / n for n in names] if names is not None else sorted(p for p in folder.iterdir() if p.is_file())
    out = {}
    for f in files:
        if not f.is_file():
            raise InputError(f"{f} not found")
        try:
            h = pydicom.dcmread(f, stop_before_pixels=True,
                                specific_tags=["ImagePositionPatient", "InstanceNumber"])
        except Exception as e:  # pydicom raises several types for non-DICOM files
            if names is not None:
                raise InputError(f"Cannot read DICOM header of {f}: {e}") from e
            continue
        if "ImagePositionPatient" not in h:
            raise InputError(f"{f} has no ImagePositionPatient: cannot place its slice")
        n = h.get("InstanceNumber")
        out[f.name] = (float(h.ImagePositionPatient[2]), int(n) if n is not None else None)
    return out


def _sorted_labels(z: list[float], labels: list[int], where: str, lobes=None):
    z, labels = np.asarray(z, dtype=np.float64), np.asarray(labels)
    if not np.isin(labels, (0, 1)).all():
        raise InputError(f"{where}: slice labels must be 0 or 1 (found {sorted(set(labels.tolist()) - {0, 1})[:3]})")
    order = np.argsort(z)
    if len(np.unique(z)) != len(z):
        raise InputError(f"{where}: two labelled slices share the same position")
    return z[order], labels[order].astype(np.int8), None if lobes is None else lobes[order].astype(np.int8)


# ---------------------------------------------------------------------------------------------- COVID-CT-MD


def _md_class(folder_name: str) -> str | None:
    name = folder_name.lower()
    if "covid" in name:
        return "COVID-19"
    if name.startswith("cap") or "pneumonia" in name:
        return "other pneumonia"
    if "normal" in name:
        return "normal"
    return None


def covid_ct_md_studies(root: str | Path) -> list[Study]:
    """The patients of a COVID-CT-MD folder that are on disk (class folders of DICOM series, ``Index.csv`` and the
    "-updated-1" label arrays): the sample here or the full 305-patient set.

    Slice labels (row ``Label Index`` of ``Index.csv``; label index i is file ``IM{i+1:04d}.dcm``) are placed by
    that file's ImagePositionPatient. Patients without a row (normal patients; in the full set also the COVID-19 and
    CAP patients that have no slice labels) carry only their study label."""
    root = Path(root)
    index_csv = root / "Index.csv"
    if not index_csv.is_file():
        raise InputError(f"{root}: no Index.csv; expected the COVID-CT-MD layout (class folders, Index.csv, "
                         f"{MD_SLICE_LABELS})")
    rows = {r["Folder/ID"]: r for r in _read_csv(index_csv, ["Label Index", "Diagnosis", "Folder/ID"])}
    slice_arr = lobe_arr = None
    if rows:
        try:
            slice_arr = np.load(root / MD_SLICE_LABELS)
            lobe_arr = np.load(root / MD_LOBE_LABELS) if (root / MD_LOBE_LABELS).is_file() else None
        except (OSError, ValueError) as e:
            raise InputError(f"{root}: cannot read the label arrays ({e})") from e
    studies = []
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        label = _md_class(class_dir.name)
        if label is None:
            continue
        for patient_dir in sorted(d for d in class_dir.iterdir() if d.is_dir()):
            pid, row = patient_dir.name, rows.get(patient_dir.name)
            if row is None:  # normal patients, and the full set's COVID-19 / CAP patients without slice labels
                studies.append(Study(patient_dir, label, pid))
                continue
            where = f"{index_csv} row of {pid}"
            if study_label(row["Diagnosis"], where) != label:
                raise InputError(f"{where}: diagnosis {row['Diagnosis']} but the folder is {class_dir.name}")
            i = int(row["Label Index"])
            if slice_arr is None or i >= len(slice_arr):
                raise InputError(f"{where}: label index {i} is outside {MD_SLICE_LABELS}")
            labels = slice_arr[i]
            files = {p.name for p in patient_dir.iterdir() if p.is_file()}
            n = sum(f"IM{k + 1:04d}.dcm" in files for k in range(len(labels)))
            if n != len(files) or labels[n:].any():
                raise InputError(f"{patient_dir}: {len(files)} files, but the labels need IM0001.dcm..IM{n:04d}.dcm"
                                 f" consecutively and no positive label beyond them")
            names = [f"IM{k + 1:04d}.dcm" for k in range(n)]
            pos = _dicom_positions(patient_dir, names)
            lobes = None if lobe_arr is None else lobe_arr[i, :n]
            z, lab, lob = _sorted_labels([pos[m][0] for m in names], labels[:n].tolist(), where, lobes)
            studies.append(Study(patient_dir, label, pid, z, lab, lob))
    if not studies:
        raise InputError(f"{root}: no patient folders under class folders named COVID-19 / CAP / Normal ...")
    return studies


# ---------------------------------------------------------------------------------------------- studies CSV


def _slice_label_file(path: Path, study: Path) -> tuple[np.ndarray, np.ndarray]:
    """A per-study slice label CSV: columns ``z,label`` (patient z in mm) or ``instance,label`` (DICOM
    InstanceNumber, for a DICOM series folder)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    key = "z" if "z" in header else "instance"
    rows = _read_csv(path, [key, "label"])
    try:
        keys = [float(r[key]) for r in rows]
        labels = [int(r["label"]) for r in rows]
    except ValueError as e:
        raise InputError(f"{path}: non-numeric {key} or label ({e})") from e
    if key == "instance":
        if not study.is_dir():
            raise InputError(f"{path}: instance numbers need a DICOM series folder; {study} is a file (use z in mm)")
        z_of = {n: z for z, n in _dicom_positions(study).values()}
        missing = [int(k) for k in keys if int(k) not in z_of]
        if missing:
            raise InputError(f"{path}: instance numbers {missing[:5]} are not in {study}")
        keys = [z_of[int(k)] for k in keys]
    return _sorted_labels(keys, labels, str(path))[:2]


def studies_csv(path: str | Path) -> list[Study]:
    """Studies of a CSV with columns ``study,label[,patient_id][,slice_labels]``; paths relative to the CSV.

    ``slice_labels`` (optional, per row) names a CSV with ``z,label`` or ``instance,label`` rows."""
    path = Path(path)
    studies = []
    for n, row in enumerate(_read_csv(path, ["study", "label"]), start=2):
        where = f"{path} line {n}"
        study = (path.parent / row["study"]).resolve()
        if not study.exists():
            raise InputError(f"{where}: study {row['study']} not found")
        z = labels = None
        if row.get("slice_labels"):
            label_file = (path.parent / row["slice_labels"]).resolve()
            if not label_file.is_file():
                raise InputError(f"{where}: slice label file {row['slice_labels']} not found")
            z, labels = _slice_label_file(label_file, study)
        studies.append(Study(study, study_label(row["label"], where), row.get("patient_id") or row["study"],
                             z, labels))
    return studies


def read_studies(source: str | Path) -> list[Study]:
    """Studies of a COVID-CT-MD folder or of a studies CSV."""
    source = Path(source)
    if source.is_dir():
        return covid_ct_md_studies(source)
    if source.suffix.lower() == ".csv":
        return studies_csv(source)
    raise InputError(f"{source}: give a COVID-CT-MD folder or a studies CSV (study,label[,patient_id][,slice_labels])")
