"""Labelled data sets on disk: class-per-folder images, ``path,label[,patient_id]`` CSVs, study lists
(``study,label``) and segmentation folders (``images/`` + ``masks/``). No SimpleITK or torch here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from .preprocess import INPUT_SIZE, prepare_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Item:
    path: Path
    label: int  # index into the label list the items were read with
    patient: str  # patient id; the item's own name where none is known


def _match_label(name: str, labels: list[str], where: str) -> int:
    for i, label in enumerate(labels):
        if name.strip().lower() == label.lower():
            return i
    raise InputError(f"{where}: label {name!r} is not one of the model's labels {labels}")


def folder_items(root: str | Path, labels: list[str]) -> list[Item]:
    """Items of an image folder with one sub-folder per class name (e.g. CT_COVID/, CT_NonCOVID/).

    A sub-folder matches a label when its name equals it or ends with ``_<label>``.
    Patient ids are unknown here: each image is its own patient.
    """
    root = Path(root)
    items = []
    for label, name in enumerate(labels):
        dirs = [d for d in root.iterdir() if d.is_dir() and (d.name == name or d.name.endswith("_" + name))]
        for d in dirs:
            items += [Item(p, label, f"{d.name}/{p.name}") for p in sorted(d.iterdir())
                      if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise InputError(f"No images under {root} in sub-folders named {labels} (or ending in _<label>)")
    return items


def _read_csv(path: Path, required: list[str]) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"Cannot read {path}: {e}") from e
    missing = [c for c in required if c not in header]
    if not rows or missing:
        raise InputError(f"{path} needs a header with columns {', '.join(required)} and at least one row"
                         + (f" (missing: {', '.join(missing)})" if rows else ""))
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in rows]


def csv_header(path: str | Path) -> list[str]:
    """Column names of a CSV file ([] if it has no readable header)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _listed_items(path: str | Path, column: str, noun: str, labels: list[str], exists) -> list[Item]:
    """Items of a CSV with columns ``<column>,label[,patient_id]``; entries are relative to the CSV's folder
    and must pass ``exists`` (a missing one is reported as ``noun``)."""
    path = Path(path)
    items = []
    for n, row in enumerate(_read_csv(path, [column, "label"]), start=2):
        entry = (path.parent / row[column]).resolve()
        if not exists(entry):
            raise InputError(f"{path} line {n}: {noun} {row[column]} not found")
        items.append(Item(entry, _match_label(row["label"], labels, f"{path} line {n}"),
                          row.get("patient_id") or row[column]))
    return items


def csv_items(path: str | Path, labels: list[str]) -> list[Item]:
    """Image items of a CSV with columns ``path,label[,patient_id]``; paths are relative to the CSV's folder."""
    return _listed_items(path, "path", "image", labels, Path.is_file)


def segmentation_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of ``root/images`` and ``root/masks``, matched by file stem."""
    root = Path(root)
    images = {p.stem: p for p in sorted((root / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted((root / "masks").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    unmatched = sorted(set(images) ^ set(masks))
    if unmatched:
        raise InputError(f"{root}: images and masks do not pair up by name (e.g. {unmatched[:3]})")
    if not images:
        raise InputError(f"{root}: no images in images/ and masks/")
    return [(images[k], masks[k]) for k in sorted(images, key=lambda s: (len(s), s))]


def _pixels(path: Path):
    """(array, full-scale value) of an image file, read by value: 8-bit grey/RGB as they are, 16-bit grey
    (PNG/TIFF mode ``I;16`` or ``I``) unconverted with full scale 65535, palette/alpha images as RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("L", "RGB"):
                return np.asarray(im), 255
            if im.mode.startswith("I"):
                a = np.asarray(im)
                if a.min() < 0 or a.max() > 65535:
                    raise InputError(f"Cannot read image {path}: values {a.min()}..{a.max()} are not 8- or 16-bit")
                return a.astype(np.uint16), 65535
            if im.mode == "F":
                raise InputError(f"Cannot read image {path}: floating-point images are not display images")
            return np.asarray(im.convert("L" if im.mode in ("1", "LA") else "RGB")), 255
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"Cannot read image {path}: {e}") from e


def read_image(path: Path) -> np.ndarray:
    """An image file as grey or RGB in 8-bit units (0..255), opened by content, not by extension.
    16-bit images are scaled by their bit depth (value * 255 / 65535, float32), never clipped."""
    a, full_scale = _pixels(path)
    return a if full_scale == 255 else a.astype(np.float32) * np.float32(255 / full_scale)


def read_lesion_mask(path: Path) -> np.ndarray:
    """Lesion labels of a mask image: 0 background, 1 GGO, 2 consolidation; a 0/255 (or 0/65535) mask
    becomes 0/3 (infection, type unknown)."""
    mask, full_scale = _pixels(path)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    values = set(np.unique(mask).tolist())
    if values <= {0, 1, 2}:
        return mask.astype(np.uint8)
    if values <= {0, full_scale}:
        return np.where(mask > 0, 3, 0).astype(np.uint8)
    raise InputError(f"{path}: mask values {sorted(values)[:6]} are neither 0/1/2 (GGO/consolidation) nor 0/255")


def load_images(items: list[Item], size: int = INPUT_SIZE,
                progress: Callable[[float], None] | None = None) -> np.ndarray:
    """(N, size, size) float32 model inputs in [0, 1]."""
    out = np.empty((len(items), size, size), dtype=np.float32)
    for i, item in enumerate(items):
        out[i] = prepare_image(read_image(item.path), size)
        if progress and (i % 32 == 31 or i == len(items) - 1):
            progress((i + 1) / len(items))
    return out
