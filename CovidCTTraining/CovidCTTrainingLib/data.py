"""COVID-CT's official patient-level splits as labelled slice lists (and as covidct-evaluate CSVs), labelled HU studies rendered to slice arrays
(``volumes.render_studies``), and unlabelled image folders (e.g. Inf-Net's unlabelled slices). Generic labelled
image sets: ``CovidCTScreenLib.input.datasets``; rendering HU volumes: ``volumes.py``.

No SimpleITK here: the 2D training path runs with torch, numpy, PIL and scikit-image only.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from CovidCTScreenLib.input.datasets import IMAGE_SUFFIXES, Item, load_images
from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.input.preprocess import INPUT_SIZE

COVID_CT_LABELS = ["NonCOVID", "COVID"]


def _covid_ct_patients(root: Path) -> dict[str, str]:
    """File name -> patient id from the COVID-CT meta files (83 COVID names lack '.png' there)."""
    patients: dict[str, str] = {}
    with open(root / "meta" / "COVID-CT-MetaInfo.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name, pid = (row.get("File name") or "").strip(), (row.get("Patient ID") or "").strip()
            if name and pid:
                patients[name if "." in name[-5:] else name + ".png"] = "covid:" + pid
    with open(root / "meta" / "NonCOVID-CT-MetaInfo.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            patients[row["image name"].strip()] = "noncovid:" + row["patient id"].strip()
    return patients


def covid_ct_split(root: str | Path, split: str) -> list[Item]:
    """Items of the official COVID-CT ``train`` / ``val`` split (label 1 = COVID), with patient ids."""
    root = Path(root)
    missing = [n for n in ("CT_COVID", "CT_NonCOVID", "splits", "meta/COVID-CT-MetaInfo.csv",
                           "meta/NonCOVID-CT-MetaInfo.csv") if not (root / n).exists()]
    if missing:
        raise InputError(f"{root} is not a COVID-CT folder: {', '.join(missing)} not found")
    patients = _covid_ct_patients(root)
    items = []
    for label, cls in enumerate(COVID_CT_LABELS):
        list_file = root / "splits" / f"{split}_{cls}.txt"
        if not list_file.is_file():
            raise InputError(f"COVID-CT split list {list_file} not found")
        for name in list_file.read_text().split():
            path = root / f"CT_{cls}" / name
            if not path.is_file():
                raise InputError(f"{path} listed in {list_file.name} is missing")
            items.append(Item(path, label, patients.get(name, f"{cls}:{name}")))
    return items


def write_covid_ct_split_csv(root: str | Path, split: str, out: str | Path) -> int:
    """Write a COVID-CT split as a covidct-evaluate CSV (path,label,patient_id; paths relative to the CSV's
    folder); return the number of rows."""
    items, out = covid_ct_split(root, split), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "patient_id"])
        for i in items:
            writer.writerow([os.path.relpath(i.path.resolve(), out.parent.resolve()), COVID_CT_LABELS[i.label],
                             i.patient])
    return len(items)


def covid_ct_summary(train_items: list[Item], val_items: list[Item]) -> dict:
    """The model card's description of the COVID-CT data a model was trained and validated on."""

    def describe(split: str, items: list[Item]) -> str:
        return (f"COVID-CT official {split} split: {len(items)} images ({sum(i.label for i in items)} COVID), "
                f"{len({i.patient for i in items})} patients")

    return {"dataset": "COVID-CT (Zhao et al. 2020), 8-bit CT figures from papers",
            "train": describe("train", train_items), "val": describe("val", val_items),
            "test": "COVID-CT test split not used (kept back)"}
def image_files(folder: str | Path) -> list[Path]:
    """Every image file below ``folder`` (sorted), e.g. Inf-Net's unlabelled slices."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def load_unlabelled_images(folder: str | Path, size: int = INPUT_SIZE, limit: int | None = None) -> np.ndarray:
    """(N, size, size) model inputs of the images below ``folder``; ``limit`` takes that many, evenly spread."""
    files = image_files(folder)
    if limit and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return load_images([Item(p, -1, p.name) for p in files], size)


def rendered_slices(files: list[str | Path]) -> list[dict]:
    """Labelled HU studies rendered by ``volumes.render_studies`` (numpy only: no SimpleITK on this path).

    Each: images (N, size, size) float32 in [0, 1], target (N,) 0/1, slice_index, slice_label (-1 = none),
    study_label, patient, source."""
    studies = []
    for f in files:
        try:
            with np.load(f) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"Cannot read rendered slices {f}: {e}") from e
        d["images"] = d["images"].astype(np.float32)
        for k in ("study_label", "patient", "source"):
            d[k] = str(d[k])
        studies.append(d)
    return studies


def describe_studies(studies: list[dict]) -> list[str]:
    """One line per rendered study for the model card: patient, label, slices, positives, source."""
    return [f"{s['patient']} ({s['study_label']}): {len(s['images'])} lung slices, {int(s['target'].sum())} "
            f"COVID-19-positive targets ({'slice labels' if (s['slice_label'] >= 0).any() else 'study label'}); "
            f"{Path(s['source']).name}" for s in studies]
