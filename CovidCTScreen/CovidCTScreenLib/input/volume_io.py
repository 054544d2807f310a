"""Read a chest CT (DICOM series folder, NRRD, NIfTI, MHA) into HU with its geometry, or refuse it.

Volumes are reoriented to LPS index order (k runs inferior -> superior along the axial slices),
so slice k is an axial slice whatever the file's axis order; the physical space is unchanged, so
everything written back (mask, heatmap) overlays the input in any viewer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
MIN_SLICES = 5
SPACING_RANGE_MM = (0.1, 20.0)
HU_RANGE = (-3100.0, 40000.0)  # -3024 is the lowest padding scanners write


@dataclass
class CTVolume:
    """HU voxels as a (z, y, x) array plus the LPS geometry SimpleITK reports. ``load_ct`` gives int16 when the
    file's HU are whole numbers within int16 (scanner CT: half the memory of float32), else float32."""

    hu: np.ndarray
    spacing: tuple[float, float, float]  # (x, y, z) mm
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 3x3 row-major
    source: str
    meta: dict = field(default_factory=dict)
    instance_numbers: list | None = None  # DICOM InstanceNumber of each slice k (None: not DICOM / not given)
    dicom_files: list | None = None  # the source DICOM files (for DICOM outputs that reference them)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    def like(self, array: np.ndarray):
        """A SimpleITK image of ``array`` (z, y, x) with this volume's geometry."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


SERIES_RULE = ("axial CT series with at least {n} images, no scouts / localizers; thin slices (<= {thin} mm) first, "
               "then a lung (sharp) kernel, then the thinnest slices, then the most images")
THIN_MM = 3.0
SHARP_KERNEL_MIN = 50  # Siemens-style kernel number (B60f, Br64, I70f) from which a kernel is sharp / lung


@dataclass
class SeriesInfo:
    """One DICOM series of a folder, as the series list shows it."""

    uid: str  # SeriesInstanceUID as the header holds it
    reader_id: str  # GDCM's series id (the UID with non-UID characters dropped)
    files: list[str]  # in GDCM order
    description: str
    modality: str
    kernel: str
    thickness_mm: float
    pixel_mm: float
    image_type: str
    axial: bool

    @property
    def sharp_kernel(self) -> bool:
        import re

        k = self.kernel.upper()
        number = re.match(r"^[A-Z]{1,2}(\d{2})", k)
        return any(w in k for w in ("LUNG", "BONE", "SHARP", "EDGE")) or bool(
            number and int(number.group(1)) >= SHARP_KERNEL_MIN)

    @property
    def usable(self) -> bool:
        return (self.modality == "CT" and self.axial and "LOCALIZER" not in self.image_type.upper()
                and len(self.files) >= MIN_SLICES)

    def to_dict(self) -> dict:
        return {"series_instance_uid": self.uid, "description": self.description, "modality": self.modality,
                "images": len(self.files), "slice_thickness_mm": self.thickness_mm, "pixel_mm": self.pixel_mm,
                "kernel": self.kernel, "image_type": self.image_type, "axial": self.axial}

    def line(self) -> str:
        return (f"{self.uid}: '{self.description or 'no description'}' {self.modality}, {len(self.files)} images, "
                f"{self.thickness_mm:g} mm slices, {self.pixel_mm:.2f} mm pixels, kernel {self.kernel or '?'}"
                f"{'' if self.axial else ', not axial'}"
                f"{', localizer' if 'LOCALIZER' in self.image_type.upper() else ''}")


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM image series in ``folder`` (one header read per series)."""
    import pydicom
    import SimpleITK as sitk

    folder = Path(folder)
    out = []
    for reader_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), reader_id))
        try:
            head = pydicom.dcmread(names[0], stop_before_pixels=True)
        except Exception as e:  # pydicom raises several types for broken files
            raise InputError(f"Cannot read DICOM header of {names[0]}: {e}") from e
        iop = [float(v) for v in getattr(head, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
        normal = np.cross(iop[:3], iop[3:])
        pixel = getattr(head, "PixelSpacing", None)
        out.append(SeriesInfo(
            uid=str(getattr(head, "SeriesInstanceUID", "")) or reader_id, reader_id=reader_id, files=names,
            description=str(getattr(head, "SeriesDescription", "")).strip(),
            modality=str(getattr(head, "Modality", "")), kernel=str(getattr(head, "ConvolutionKernel", "")),
            thickness_mm=float(getattr(head, "SliceThickness", 0) or 0),
            pixel_mm=float(pixel[0]) if pixel else 0.0, image_type="\\".join(getattr(head, "ImageType", [])),
            axial=bool(abs(normal[2]) >= 0.9)))
    return out


def choose_series(series: list[SeriesInfo], uid: str | None = None) -> SeriesInfo:
    """The series named by ``uid``, else the best for lung reading by ``SERIES_RULE``."""
    if uid:
        for s in series:
            if uid in (s.uid, s.reader_id):
                return s
        raise InputError(f"Series {uid} is not in this folder; its series are: "
                         + "; ".join(s.line() for s in series))
    usable = [s for s in series if s.usable] or series  # none usable: the checks below say why
    return min(usable, key=lambda s: (not 0 < s.thickness_mm <= THIN_MM, not s.sharp_kernel,
                                      s.thickness_mm or 99.0, -len(s.files)))


def _dicom_series(folder: Path, series_uid: str | None = None) -> tuple[list[str], dict, list]:
    """File names of the chosen CT series in ``folder`` (GDCM order), its header facts, and per file
    (ImagePositionPatient or None, InstanceNumber or None)."""
    import pydicom

    files = [p for p in folder.iterdir() if p.is_file()]
    if not files:
        raise InputError(f"Folder {folder} is empty: expected the DICOM files of one CT series")
    series = list_series(folder)
    if not series:
        _refuse_unreadable(folder, files, set())
        raise InputError(f"No DICOM series found in {folder} ({len(files)} files, none readable as DICOM image)")
    chosen = choose_series(series, series_uid)
    names = chosen.files
    _refuse_unreadable(folder, files, {n for s in series for n in s.files})  # other series' files are fine
    head = pydicom.dcmread(names[0], stop_before_pixels=True)
    modality = str(getattr(head, "Modality", ""))
    if modality != "CT":
        raise InputError(f"{folder} holds a {modality or 'unknown-modality'} series; CovidCTScreen needs CT")
    if "RescaleIntercept" not in head and int(getattr(head, "PixelRepresentation", 0)) == 0:
        raise InputError(f"{folder}: unsigned pixels without RescaleIntercept, so values are not Hounsfield units")
    slices = []
    for n in names:
        h = pydicom.dcmread(n, stop_before_pixels=True, specific_tags=["ImagePositionPatient", "InstanceNumber"])
        slices.append(([float(v) for v in h.ImagePositionPatient] if "ImagePositionPatient" in h else None,
                       int(h.InstanceNumber) if h.get("InstanceNumber") not in (None, "") else None))
    positions = [p for p, _ in slices if p is not None]
    if len(positions) == len(names) > 2:
        steps = np.linalg.norm(np.diff(np.array(positions), axis=0), axis=1)
        if steps.min() <= 0 or steps.max() > 1.5 * np.median(steps):
            raise InputError(f"{folder}: slices are missing or duplicated (slice gaps {steps.min():.2f}-"
                             f"{steps.max():.2f} mm); re-export the complete series")
    meta = {"format": "DICOM", "modality": modality, "files": len(names), "file_names": names,
            **_spacing_note(positions),
            "series_instance_uid": str(getattr(head, "SeriesInstanceUID", "")),
            "series_description": chosen.description,
            "manufacturer": str(getattr(head, "Manufacturer", "")),
            "convolution_kernel": str(getattr(head, "ConvolutionKernel", "")),
            "slice_thickness_mm": float(getattr(head, "SliceThickness", 0) or 0)}
    if len(series) > 1:
        meta["series_choice"] = {
            "chosen": chosen.uid,
            "how": "--series" if series_uid else f"rule: {SERIES_RULE.format(n=MIN_SLICES, thin=THIN_MM)}",
            "series": [s.to_dict() for s in series]}
    return names, meta, slices


def _spacing_note(positions: list) -> dict:
    """What ITK's "non uniform sampling" warning says, as report metadata: uneven gaps within the tolerance."""
    if len(positions) < 3:
        return {}
    steps = np.linalg.norm(np.diff(np.array(positions), axis=0), axis=1)
    if steps.max() - steps.min() <= 0.1 * np.median(steps):
        return {}
    return {"slice_gaps_mm": [round(float(steps.min()), 3), round(float(steps.max()), 3)],
            "slice_gaps_note": "uneven slice gaps; the volume is read as if evenly spaced"}


def _refuse_unreadable(folder: Path, files: list[Path], series: set[str]) -> None:
    """Name the file that broke a series: an empty file, or a DICOM file GDCM could not place in it."""
    import pydicom

    for f in sorted(files):
        if str(f) in series or f.name.startswith(".") or f.name.upper() == "DICOMDIR":
            continue
        if f.stat().st_size == 0:
            raise InputError(f"{folder}: empty file {f.name} (0 bytes); re-export the complete series")
        try:
            pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM at all: a stray file, not the missing slice
            continue
        raise InputError(f"{folder}: DICOM file {f.name} is truncated or corrupt (it cannot be read as part of "
                         f"the series); re-export the complete series")


def _read_gzipped(path: Path):
    """Read a gzipped volume with a single decompression: Python's gzip (which checks length and CRC; ITK reads a
    truncated or corrupt .gz as zeros or garbage without complaint) writes it to a temporary file ITK then reads."""
    import gzip
    import shutil
    import tempfile
    import zlib

    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="covidct-read-") as tmp:
        plain = Path(tmp) / path.name[:-3]
        try:
            with gzip.open(path, "rb") as f, open(plain, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 22)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"Cannot read {path}: the file is corrupt or truncated ({e})") from e
        return sitk.ReadImage(str(plain))


def _read_image(path: Path, series_uid: str | None = None):
    """(SimpleITK image, meta, per-file (position, instance number) or None for volume files)."""
    import warnings

    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # our checks say what is wrong, in one line
    if path.is_dir():
        with warnings.catch_warnings():  # pydicom's remarks on odd header values: not the user's concern here
            warnings.simplefilter("ignore")
            names, meta, slices = _dicom_series(path, series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
        try:
            return reader.Execute(), meta, slices
        except RuntimeError as e:
            bad = next((n for n in names if n in str(e)), None)
            where = f"DICOM file {Path(bad).name} is truncated or corrupt" if bad else str(e).strip().splitlines()[-1]
            raise InputError(f"Cannot read the DICOM series in {path}: {where}") from e
    name = path.name.lower()
    if name.endswith(".dcm"):
        raise InputError(f"{path} is a single DICOM file; give the folder holding the whole CT series")
    if not name.endswith(VOLUME_SUFFIXES):
        raise InputError(f"{path}: unsupported file type; give a DICOM series folder or one of "
                         f"{', '.join(VOLUME_SUFFIXES)}")
    try:
        img = _read_gzipped(path) if name.endswith(".gz") else sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"Cannot read {path}: the file is corrupt or not a {name.split('.', 1)[-1]} volume") from e
    return img, {"format": name.split(".", 1)[-1].upper()}, None


def load_ct(path: str | os.PathLike, series_uid: str | None = None) -> CTVolume:
    """Read ``path`` and return the CT in HU, or raise ``InputError`` saying why it cannot be screened.
    A DICOM folder with several series gives the one ``series_uid`` names, else the best by ``SERIES_RULE``."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if series_uid and not path.is_dir():
        raise InputError(f"--series needs a DICOM folder; {path} is a file")
    img, meta, slices = _read_image(path, series_uid)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path} has {img.GetNumberOfComponentsPerPixel()} components per voxel (colour or "
                         f"vector image); a CT has one")
    if img.GetDimension() != 3:
        raise InputError(f"{path} is {img.GetDimension()}D; a CT volume is 3D")
    img = sitk.DICOMOrient(img, "LPS")
    volume = CTVolume(hu=_compact_hu(sitk.GetArrayViewFromImage(img)), spacing=img.GetSpacing(),
                      origin=img.GetOrigin(), direction=img.GetDirection(), source=str(path), meta=meta)
    if slices is not None:
        volume.dicom_files = list(meta.pop("file_names"))
        volume.instance_numbers = [None] * img.GetSize()[2]
        for position, number in slices:
            if position is not None:
                k = img.TransformPhysicalPointToIndex(position)[2]
                if 0 <= k < len(volume.instance_numbers):
                    volume.instance_numbers[k] = number
    del img
    validate_ct(volume)
    return volume


def _compact_hu(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` as int16 when that holds every value exactly (integer CT), else float32."""
    if np.issubdtype(array.dtype, np.integer) and array.size and np.iinfo(np.int16).min <= array.min() \
            and array.max() <= np.iinfo(np.int16).max:
        return array.astype(np.int16)
    return array.astype(np.float32)


def validate_ct(volume: CTVolume) -> None:
    """Refuse volumes that are not a usable chest CT in Hounsfield units."""
    hu, src = volume.hu, volume.source
    if hu.ndim != 3 or hu.shape[0] < MIN_SLICES:
        raise InputError(f"{src} has {hu.shape[0] if hu.ndim == 3 else 1} slice(s); at least {MIN_SLICES} axial "
                         f"slices of a chest CT are needed")
    if min(hu.shape[1:]) < 64:
        raise InputError(f"{src}: slices of {hu.shape[2]}x{hu.shape[1]} pixels are too small for a chest CT")
    lo, hi = SPACING_RANGE_MM
    if not all(lo <= s <= hi for s in volume.spacing):
        raise InputError(f"{src}: voxel spacing {tuple(round(s, 3) for s in volume.spacing)} mm is not plausible "
                         f"for a CT (expected {lo}-{hi} mm)")
    if np.issubdtype(hu.dtype, np.floating) and not all(np.isfinite(hu[z:z + 32]).all() for z in range(0, len(hu), 32)):
        raise InputError(f"{src} contains NaN or infinite voxel values")
    vmin, vmax = float(hu.min()), float(hu.max())
    if vmin == vmax:
        raise InputError(f"{src} is constant ({vmin}); it holds no image")
    if vmin >= 0:
        raise InputError(f"{src}: no negative values (min {vmin:g}); the data is not in Hounsfield units "
                         f"(raw unsigned scanner values without rescale?)")
    if vmin < HU_RANGE[0] or vmax > HU_RANGE[1]:
        raise InputError(f"{src}: values {vmin:g}..{vmax:g} lie outside the Hounsfield range")
    p1, p50 = np.percentile(hu[:, ::4, ::4], [1, 50])
    if p1 > -900:
        raise InputError(f"{src}: no air near -1000 HU (1st percentile {p1:.0f}); this is not a CT in "
                         f"Hounsfield units or not a chest CT")
    if p50 > 300:
        raise InputError(f"{src}: median {p50:.0f} HU is not plausible for a chest CT")


NRRD_TYPES = {"uint8": "uchar", "int16": "short", "float32": "float"}


def write_nrrd(volume: CTVolume, array: np.ndarray, path: str | os.PathLike, slab: int = 16) -> None:
    """Write a (z, y, x) uint8 / bool / int16 / float32 ``array`` on ``volume``'s grid as gzip NRRD, slab by slab
    (``sitk.WriteImage`` would first copy the whole array into an ITK image: +1 GB for a 1000-slice heatmap)."""
    import gzip

    array = array.view(np.uint8) if array.dtype == bool else array
    if array.shape != volume.shape or str(array.dtype) not in NRRD_TYPES:
        raise ValueError(f"cannot write a {array.dtype} array of shape {array.shape} on a {volume.shape} grid")
    d = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    axes = " ".join("(" + ",".join(repr(float(v)) for v in d[:, i] * volume.spacing[i]) + ")" for i in range(3))
    header = (f"NRRD0004\ntype: {NRRD_TYPES[str(array.dtype)]}\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {array.shape[2]} {array.shape[1]} {array.shape[0]}\nspace directions: {axes}\n"
              f"kinds: domain domain domain\nendian: little\nencoding: gzip\n"
              f"space origin: ({','.join(repr(float(v)) for v in volume.origin)})\n\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0) as z:
            for k in range(0, len(array), slab):
                z.write(np.ascontiguousarray(array[k:k + slab], array.dtype.newbyteorder("<")).tobytes())


def read_dicom_slice(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One DICOM slice in HU as a (1, y, x) float32 array and its (x, y, z) spacing.

    For checks on single slices (lung masking, domain gap); screening itself refuses single slices.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    sy, sx = (float(v) for v in ds.PixelSpacing)  # DICOM order: row spacing, column spacing
    return hu[None], (sx, sy, float(ds.SliceThickness))
