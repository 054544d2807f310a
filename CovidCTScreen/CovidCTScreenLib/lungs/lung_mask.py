"""HU-based 3D lung mask with right / left lungs, trachea and main bronchi removed.

Seed 002's recipe, then made robust for sick lungs and the lung bases:
1. body: tissue above -500 HU, largest 3D component, holes filled slice by slice (this is the
   flood fill that drops the air outside the body and the scanner table);
2. aerated lung core: air below -850 HU inside the body (seed 002's threshold; -700 / -550 HU when that
   finds almost no air, as in diffusely dense lungs), small objects removed. Air cores whose median one
   pixel in from their edge is pure gas (< -950 HU) are bowel, stomach, bronchi or air trapped against the
   skin: they are grown by ``GAS_MARGIN_MM`` and cut out, so a thin, partial-volumed diaphragm does not join
   the colon or stomach to the lung;
3. lung: everything below -300 HU inside the body that is connected to a core, so partially
   aerated (ground-glass, -750..-300 HU) parenchyma joins the lung it belongs to;
4. airways: central 2D components of pure air (< -900 HU; < -850 HU in diffusely dense lungs) of airway
   size, ringed by soft tissue, are the trachea and main bronchi;
   they are cut out with a margin for their wall before the lung components are formed;
5. right / left: the two largest components (split by erosion when the lungs touch; thin bases left over
   are cut at the midline between the two), sided by the patient's x axis (LPS: +x is the patient's left);
   smaller components join their side unless they are tiny or pure gas;
6. each lung is closed in 3D (a cylinder of radius and half-height ``CLOSING_MM``) and what it encloses in
   3D is filled: vessels, nodules and consolidation inside the lung stay in the mask, while the liver dome,
   spleen, stomach and cardiac apex, which rise into the lung on axial slices but are open to the abdomen
   or mediastinum in 3D, stay out. A single slice has no 3D: its holes are filled in-plane.
   Limit: consolidation or effusion lying broadly on the pleura (wider than about 2 x ``CLOSING_MM``) is
   shaped like the chest wall and stays out; a lung mask the user has (``--lung-mask``) avoids that.

The steps run on a working grid of about ``WORK_PIXEL_MM`` in-plane (block-averaged HU), and the
labels come back to the input grid by nearest neighbour: a 512 x 512 x 141 CT takes seconds, and
the mask edge is exact to about one working pixel.

Labels: 0 background, 1 right lung, 2 left lung.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError

BODY_HU = -500.0
LUNG_HU = -300.0  # upper end of ground glass: diseased but aerated lung joins the lung
AIRWAY_HU = -900.0
DENSE_AIRWAY_HU = -850.0  # lumen threshold when the lungs hold no air below -850 HU (see airway_mask)
AIRWAY_WALL_MM = 3.0  # airway lumen grown by this much in-plane to cut it free from the lungs
AIRWAY_AREA_MM2 = (20.0, 700.0)  # main bronchus .. trachea lumen
AIRWAY_RING_MM = 3.0
AIRWAY_RING_HU = -500.0  # the ring around an airway is wall and mediastinum; around lung air it is lung
AIRWAY_CENTRAL_FRACTION = 0.18  # |x - body centre| below this fraction of body width
CLOSING_MM = 7.0  # gaps up to 14 mm close (segmental and smaller vessels); lobar and hilar vessels stay out
CORE_HU = (-850.0, -700.0, -550.0)  # aerated-core thresholds, tried in turn (diffusely dense lungs)
MIN_CORE_FRACTION = 0.02  # of the body: less aerated core than this means "try the next threshold"
GAS_HU = -950.0  # air with its median below this is a gas pocket (airway, bowel, stomach, skin fold), not lung
GAS_MARGIN_MM = 3.0  # gas pockets grown by this much to cut the partial-volumed diaphragm between gas and lung
WORK_PIXEL_MM = 1.6
RIGHT, LEFT = 1, 2
LABEL_NAMES = {RIGHT: "right lung", LEFT: "left lung"}
_SQUARE = np.ones((1, 3, 3), bool)  # in-plane 8-neighbourhood
_CROSS = ndimage.generate_binary_structure(3, 1) & _SQUARE.repeat(3, axis=0) * np.array([0, 1, 0], bool)[:, None, None]
_Z_LINE = np.ones((3, 1, 1), bool)  # the neighbours in the slices above and below


COMPUTED = {"source": "computed (lung_mask.py)",
            "method": "HU-based 3D mask (3D closing and 3D hole filling, see lung_mask.py); labels 1 right, 2 left"}
GRID_TOLERANCE_MM = 0.01  # origin and spacing of a user mask must match the CT's to this (and directions to 1e-4)


@dataclass
class LungMask:
    labels: np.ndarray  # (z, y, x) uint8: 0 background, 1 right, 2 left
    body: np.ndarray | None = None  # (z, y, x) bool; None where not kept (the screening does not use it)
    source: dict = field(default_factory=lambda: dict(COMPUTED))  # the report's "lung_mask" entry

    @property
    def lungs(self) -> np.ndarray:
        return self.labels > 0

    def volumes_ml(self, spacing: tuple[float, float, float]) -> dict[str, float]:
        voxel_ml = float(np.prod(spacing)) / 1000.0
        counts = {side: np.count_nonzero(self.labels == side) for side in (RIGHT, LEFT)}  # bincount: int64 copy
        return {"right": counts[RIGHT] * voxel_ml, "left": counts[LEFT] * voxel_ml,
                "total": (counts[RIGHT] + counts[LEFT]) * voxel_ml}


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    out = np.empty_like(mask)
    for k, s in enumerate(mask):
        out[k] = ndimage.binary_fill_holes(s)
    return out


SLAB = 32  # slices per slab where a full-volume temporary would cost memory


def _slab_bincount(labels: np.ndarray, select: np.ndarray | None = None) -> np.ndarray:
    """``np.bincount`` of the labels (of the voxels where ``select``), slab by slab: no int64 copy of the volume."""
    out = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    for k in range(0, len(labels), SLAB):
        part = labels[k:k + SLAB] if select is None else labels[k:k + SLAB][select[k:k + SLAB]]
        out += np.bincount(part.ravel(), minlength=len(out))
    return out


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3D labels (face connectivity) and the voxel count of each label (index 0 = background)."""
    import SimpleITK as sitk

    image = sitk.ConnectedComponent(sitk.GetImageFromArray(np.ascontiguousarray(mask).view(np.uint8)))
    labels = sitk.GetArrayFromImage(image)
    del image
    return labels, _slab_bincount(labels)


def _lookup(labels: np.ndarray, keep) -> np.ndarray:
    """Boolean mask of the voxels whose label is in ``keep`` (a table lookup: no sort, no per-label pass)."""
    table = np.zeros(int(labels.max(initial=0)) + 1, bool)
    table[np.asarray(keep, np.int64)] = True
    return table[labels]


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient's body (lungs included), without outside air and the table."""
    labels, sizes = _components(hu > BODY_HU)
    if len(sizes) < 2:
        return np.zeros(hu.shape, bool)
    sizes[0] = 0
    largest = labels == sizes.argmax()
    del labels
    return _fill_holes_per_slice(largest)


def airway_mask(hu: np.ndarray, body: np.ndarray, spacing, air_hu: float = AIRWAY_HU) -> np.ndarray:
    """Trachea and main bronchi, slice by slice: central 2D components of pure air (< ``air_hu``)
    of airway size whose surrounding ring is soft tissue (mediastinum), not lung. In diffusely dense lungs
    (no aerated core below -850 HU) the lumen is still the darkest air, but a narrow one (intubated trachea,
    5 mm slices, smooth kernel) is partial-volumed to -850..-930 HU: there ``DENSE_AIRWAY_HU`` finds it."""
    pixel_mm2 = spacing[0] * spacing[1]
    ring_px = max(1, int(round(AIRWAY_RING_MM / min(spacing[0], spacing[1]))))
    air = (hu < air_hu) & body
    out = np.zeros(hu.shape, bool)
    for k in range(hu.shape[0]):
        cols = np.flatnonzero(body[k].any(axis=0))
        labels, n = ndimage.label(air[k])
        if n == 0 or cols.size == 0:
            continue
        centre, width = (cols[0] + cols[-1]) / 2.0, cols[-1] - cols[0] + 1
        areas = np.bincount(labels.ravel(), minlength=n + 1) * pixel_mm2
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            if not AIRWAY_AREA_MM2[0] <= areas[i] <= AIRWAY_AREA_MM2[1]:
                continue
            if abs((box[1].start + box[1].stop) / 2.0 - centre) > AIRWAY_CENTRAL_FRACTION * width:
                continue
            grown = tuple(slice(max(b.start - ring_px, 0), b.stop + ring_px) for b in box)
            comp = labels[grown] == i
            ring = ndimage.binary_dilation(comp, iterations=ring_px) & ~comp
            if hu[k][grown][ring].mean(dtype=np.float64) > AIRWAY_RING_HU:
                out[k][grown] |= comp
    return out


def _split_two(lung: np.ndarray) -> np.ndarray:
    """Labels 1..n of the lung components; when one component holds both lungs, split it: erode
    until two large parts appear, then grow both back inside it in turn by the eroded depth; what is
    left (thin lung bases, cut at the midline between the two) becomes components of its own."""
    labels, sizes = _components(lung)
    sizes[0] = 0
    total = sizes.sum()
    order = np.argsort(sizes)[::-1]
    if len(order) > 2 and sizes[order[1]] > 0.1 * total:
        return labels
    box = _bbox(labels == order[0], 1)
    big = labels[box] == order[0]
    eroded = big
    for depth in range(1, 13):
        eroded = ndimage.binary_erosion(eroded, _SQUARE)
        seeds, s = _components(eroded)
        s[0] = 0
        top = np.argsort(s)[::-1]
        if len(top) > 2 and s[top[1]] > 0.1 * s.sum():
            a, b = seeds == top[0], seeds == top[1]
            for _ in range(depth + 1):  # grow both back by the eroded depth, in turn
                free = big & ~a & ~b
                grow_a = ndimage.binary_dilation(a, _SQUARE) & free
                a, b = a | grow_a, b | (ndimage.binary_dilation(b, _SQUARE) & free & ~grow_a)
            rest = big & ~a & ~b  # pieces cut off far from both (thin bases): own components, each on one
            midline = int(round((np.nonzero(a)[2].mean() + np.nonzero(b)[2].mean()) / 2.0))
            rest[:, :, midline] = False  # side of the midline between the two lungs
            rest, _ = _components(rest)
            n = labels.max()
            part = labels[box]
            part[big] = np.where(rest[big] > 0, rest[big] + n + 2, 0)
            part[a] = n + 1
            part[b] = n + 2
            return labels
    return labels


def _side_labels(components: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Right (1) / left (2) from components: the two largest are the lungs; others join their side."""
    sizes = _slab_bincount(components)
    gas = _slab_bincount(components, hu < GAS_HU) > 0.5 * sizes
    sizes[0] = 0
    total = sizes.sum()
    keep = [i for rank, i in enumerate(np.argsort(sizes)[::-1])
            if sizes[i] > 0 and (rank < 2 or (sizes[i] >= 0.01 * total and not gas[i]))]
    if not keep:
        return np.zeros(components.shape, np.uint8)
    x_sums = np.zeros(len(sizes))  # per label: the sum of its voxels' x index (exact: integers below 2**53)
    cols = np.arange(components.shape[2], dtype=np.float64)
    for k in range(0, len(components), SLAB):
        part = components[k:k + SLAB]
        x_sums += np.bincount(part.ravel(), weights=np.broadcast_to(cols, part.shape).ravel(), minlength=len(sizes))
    xs = {i: x_sums[i] / sizes[i] for i in keep}
    table = np.zeros(len(sizes), np.uint8)
    if len(keep) == 1:
        body_cols = components.shape[2] / 2.0
        table[keep[0]] = LEFT if xs[keep[0]] > body_cols else RIGHT
        return table[components]
    a, b = keep[0], keep[1]
    right, left = (a, b) if xs[a] < xs[b] else (b, a)
    midline = (xs[a] + xs[b]) / 2.0
    for i in keep:
        table[i] = RIGHT if (i == right or (i != left and xs[i] < midline)) else LEFT
    return table[components]


def _cylinder_steps(radius_mm: float, spacing) -> list[np.ndarray]:
    """Structuring steps whose chained dilations make a cylinder of radius and half-height ``radius_mm``
    on this grid: in-plane steps alternate cross and square (an octagon, close to a disc), then steps
    along z as many as the slice spacing allows (thick slices get a flat cylinder)."""
    n_xy = max(1, int(round(radius_mm / min(spacing[0], spacing[1]))))
    n_z = int(round(radius_mm / spacing[2]))
    return [_CROSS if i % 2 == 0 else _SQUARE for i in range(n_xy)] + [_Z_LINE] * n_z


def _chain(mask: np.ndarray, steps: list[np.ndarray], dilate: bool) -> np.ndarray:
    """Binary dilations (or erosions, outside counted as lung) by ``steps`` in turn, as ``binary_dilation`` /
    ``binary_erosion(border_value=1)`` give them on a mask padded by the steps' reach, by fast 1D max / min
    filters: a square is a line along y then x, a cross the union of the two, and the z-lines one long line."""
    line_filter = ndimage.maximum_filter1d if dilate else ndimage.minimum_filter1d
    union = np.maximum if dilate else np.minimum

    def line(a: np.ndarray, size: int, axis: int) -> np.ndarray:
        return line_filter(a, size, axis=axis, mode="constant", cval=0 if dilate else 1)

    out = mask.view(np.uint8)
    for step in steps:
        if step is _SQUARE:
            out = line(line(out, 3, 1), 3, 2)
        elif step is _CROSS:
            out = union(line(out, 3, 1), line(out, 3, 2))
    n_z = sum(step is _Z_LINE for step in steps)
    return (line(out, 2 * n_z + 1, 0) if n_z else out).view(bool)


def _bbox(mask: np.ndarray, pad: int, pad_z: int = 0) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty mask, grown by ``pad`` in-plane and ``pad_z`` across slices (clipped)."""
    zs, ys, xs = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    return (slice(max(zs[0] - pad_z, 0), zs[-1] + pad_z + 1), slice(max(ys[0] - pad, 0), ys[-1] + pad + 1),
            slice(max(xs[0] - pad, 0), xs[-1] + pad + 1))


def _close_3d(mask: np.ndarray, spacing) -> np.ndarray:
    """Morphological closing with a cylinder of radius and half-height ``CLOSING_MM`` (a 3D element that is
    cheap to apply): vessels, small nodules and shallow dents of dense lung join the lung; organs wider
    than it (heart, liver dome) stay outside."""
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    steps = _cylinder_steps(CLOSING_MM, spacing)
    pad_z = sum(step.shape[1] == 1 for step in steps) + 1
    pad = len(steps) - pad_z + 2
    box = _bbox(mask, pad, pad_z)
    crop = np.pad(mask[box], ((pad_z, pad_z), (pad, pad), (pad, pad)))  # room for the cylinder at the array edge
    crop = _chain(_chain(crop, steps, dilate=True), steps, dilate=False)
    out[box] = crop[pad_z:-pad_z, pad:-pad, pad:-pad]
    return out


def _fill_enclosed(mask: np.ndarray) -> np.ndarray:
    """Fill what the lung encloses in 3D (consolidation, nodules, vessels inside the lung); an organ that
    rises into the lung from below or from the mediastinum is open to the outside and is not filled.
    A single slice has no third dimension: its holes are filled in-plane."""
    if mask.shape[0] == 1 or not mask.any():
        return _fill_holes_per_slice(mask)
    box = _bbox(mask, 1)
    out = mask.copy()
    out[box] = ndimage.binary_fill_holes(mask[box])
    return out


def _cores(hu: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(aerated lung cores, gas pockets, the core threshold used). Cores are air below the first of ``CORE_HU`` that
    gives a lung core of at least ``MIN_CORE_FRACTION`` of the body (diffusely dense lungs have no air below -850 HU);
    components of pure gas (median < ``GAS_HU`` one pixel in from their edge, where partial volume with the wall
    does not lift it: bowel, stomach, air trapped against the skin) are gas pockets."""
    total = max(int(body.sum()), 1)
    for air_hu in CORE_HU:
        air = (hu < air_hu) & body
        labels, sizes = _components(air)
        interior = _chain(air, [_SQUARE], dilate=False)
        gas_voxels = _slab_bincount(labels, interior & (hu < GAS_HU))
        interior_sizes = _slab_bincount(labels, interior)
        del air, interior
        sizes[0] = 0
        gas = (gas_voxels > 0.5 * interior_sizes) & (interior_sizes > 0)  # interior median below GAS_HU
        lung_sizes = np.where(gas, 0, sizes)
        keep = lung_sizes >= max(0.005 * lung_sizes.sum(), 1)
        if lung_sizes[keep].sum() >= MIN_CORE_FRACTION * total:
            break
    return _lookup(labels, np.flatnonzero(keep)), _lookup(labels, np.flatnonzero(gas)), air_hu


def lung_mask(hu: np.ndarray, spacing: tuple[float, float, float], keep_body: bool = True) -> LungMask:
    """Right/left lung labels for a (z, y, x) HU array with (x, y, z) spacing in mm; ``keep_body=False`` leaves
    the body mask out (one byte per voxel less to hold)."""
    f = max(1, int(round(WORK_PIXEL_MM / min(spacing[0], spacing[1]))))
    if f == 1:
        mask = _lung_mask(hu, spacing)
        return mask if keep_body else LungMask(labels=mask.labels)
    z, h, w = hu.shape
    small = np.zeros((z, -(-h // f), -(-w // f)), np.float32)  # block means (sums of whole HU are exact)
    for k in range(0, z, SLAB):
        padded = np.pad(hu[k:k + SLAB], ((0, 0), (0, -h % f), (0, -w % f)), mode="edge")
        for i in range(f):
            for j in range(f):
                small[k:k + SLAB] += padded[:, i::f, j::f]
    del padded
    small /= f * f
    coarse = _lung_mask(small, (spacing[0] * f, spacing[1] * f, spacing[2]))
    del small

    def up(a: np.ndarray) -> np.ndarray:  # nearest neighbour, written in place (no repeated copies)
        out = np.empty((z, h, w), a.dtype)
        for i in range(f):
            for j in range(f):
                out[:, i::f, j::f] = a[:, :len(range(i, h, f)), :len(range(j, w, f))]
        return out

    return LungMask(labels=up(coarse.labels), body=up(coarse.body) if keep_body else None)


def _lung_mask(hu: np.ndarray, spacing: tuple[float, float, float]) -> LungMask:
    body = body_mask(hu)
    core, gas, core_hu = _cores(hu, body)
    airways = airway_mask(hu, body, spacing, AIRWAY_HU if core_hu == CORE_HU[0] else DENSE_AIRWAY_HU)
    wall = max(1, int(round(AIRWAY_WALL_MM / min(spacing[0], spacing[1]))))
    airways = ndimage.binary_dilation(airways, _SQUARE, iterations=wall)
    candidate = (hu < LUNG_HU) & body & ~airways
    if gas.any():  # a thin, partial-volumed diaphragm must not join bowel / stomach gas to the lung
        steps = _cylinder_steps(GAS_MARGIN_MM, spacing)
        box = _bbox(gas, len(steps), len(steps))
        grown = gas[box]
        for step in steps:
            grown = ndimage.binary_dilation(grown, step)
        candidate[box] &= ~grown
    candidate_labels, _ = _components(candidate)
    lung = _lookup(candidate_labels, np.unique(candidate_labels[core & candidate]))
    lung &= candidate_labels > 0
    del candidate_labels, core
    sides = _side_labels(_split_two(lung), hu)
    labels = np.zeros(hu.shape, np.uint8)
    other_air = (hu < LUNG_HU) & (sides == 0)  # airways, gas and their margins: closing adds tissue, not air
    for side in (RIGHT, LEFT):
        solid = _fill_enclosed(_close_3d(sides == side, spacing)) & body & ~other_air
        labels[solid & (labels == 0)] = side
    return LungMask(labels=labels, body=body)


def segment_side(name: str) -> int | None:
    """RIGHT / LEFT for a lung segment name ('right lung', 'lung_lower_lobe_left', 'Left lung'); None otherwise."""
    words = set(re.split(r"[^a-z]+", name.lower()))
    if not words & {"lung", "lungs", "lobe"}:
        return None
    if "right" in words:
        return RIGHT
    if "left" in words:
        return LEFT
    return None


def _segments(img) -> list[tuple[str, int, int]]:
    """(name, layer, label value) of each segment of a Slicer .seg.nrrd (empty for a plain label map)."""
    out = []
    for key in img.GetMetaDataKeys():
        m = re.fullmatch(r"Segment(\d+)_Name", key)
        if m:
            i = m.group(1)
            layer = img.GetMetaData(f"Segment{i}_Layer") if img.HasMetaDataKey(f"Segment{i}_Layer") else "0"
            out.append((img.GetMetaData(key), int(layer), int(img.GetMetaData(f"Segment{i}_LabelValue"))))
    return out


def _on_ct_grid(img, volume, name: str) -> np.ndarray:
    """The (z, y, x[, layer]) array of ``img`` on the CT grid. Same spacing and direction, and an origin on a
    CT voxel: a mask cropped to its extent (as Slicer saves segmentations) is placed back into the CT grid;
    anything else is refused."""
    import SimpleITK as sitk

    size, spacing, origin = np.array(img.GetSize()), np.array(img.GetSpacing()), np.array(img.GetOrigin())
    ct_size = np.array(volume.hu.shape[::-1])
    direction = np.array(volume.direction).reshape(3, 3)
    offset = np.linalg.solve(direction * np.array(volume.spacing), origin - np.array(volume.origin))
    start = np.round(offset).astype(int)
    if (not np.allclose(spacing, volume.spacing, atol=GRID_TOLERANCE_MM)
            or not np.allclose(img.GetDirection(), volume.direction, atol=1e-4)
            or not np.allclose(offset, start, atol=GRID_TOLERANCE_MM / min(volume.spacing))
            or (start < 0).any() or (start + size > ct_size).any()):
        raise InputError(f"lung mask {name} is not on the CT grid (mask size {tuple(size)}, spacing "
                         f"{tuple(np.round(spacing, 3))} mm, origin {tuple(np.round(origin, 1))}; CT size "
                         f"{tuple(ct_size)}, spacing {tuple(round(v, 3) for v in volume.spacing)} mm, origin "
                         f"{tuple(round(v, 1) for v in volume.origin)}); resample the mask onto the CT first")
    part = sitk.GetArrayFromImage(img)
    out = np.zeros(tuple(ct_size[::-1]) + part.shape[3:], part.dtype)
    out[start[2]:start[2] + size[2], start[1]:start[1] + size[1], start[0]:start[0] + size[0]] = part
    return out


def read_lung_mask(path: str | os.PathLike, volume, name: str | None = None) -> LungMask:
    """A lung mask the user already has, on the CT's grid: a label map, a binary mask or a Slicer segmentation
    (.seg.nrrd; also what Lung CT Segmenter or TotalSegmentator give) in NRRD / NIfTI / MHA.

    Segments named as lungs or lobes with a side ('right lung', 'lung_upper_lobe_left', ...) give the sides;
    other segments (airways, vessels, lesions) are ignored. A plain label map with values {1, 2} is read as
    1 right, 2 left (as ``lung_mask.nrrd`` of a report); any other mask is binary (non-zero = lung) and is
    split into right / left as the computed mask is (components, sided by the patient's x axis). A mask on
    another grid than the CT is refused (``InputError``): resample it onto the CT first (a mask cropped to part
    of the CT grid, as Slicer saves segmentations, is placed back)."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(f"lung mask {path} does not exist")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"Cannot read the lung mask {path}: not a readable NRRD / NIfTI / MHA image") from e
    segments = _segments(img)
    if img.GetDimension() == 4:  # a Slicer segmentation with overlapping segments: one layer per 4th index
        img = sitk.Compose([img[:, :, :, i] for i in range(img.GetSize()[3])])
    if img.GetDimension() != 3:
        raise InputError(f"lung mask {path} is {img.GetDimension()}D; it must be a 3D mask on the CT grid")
    img = sitk.DICOMOrient(img, "LPS")
    array = _on_ct_grid(img, volume, path.name)
    layers = array[..., None] if array.ndim == 3 else array  # (z, y, x, layer)
    labels = np.zeros(volume.hu.shape, np.uint8)
    sided = [(n, layer, value, segment_side(n)) for n, layer, value in segments]
    used = [n for n, _, _, side in sided if side]
    for _, layer, value, side in sided:
        if side:
            labels[(layers[..., layer] == value) & (labels == 0)] = side
    values = set(np.unique(layers).tolist()) - {0}
    how = f"segments {', '.join(used)}"
    if not used:
        lungs = layers.any(axis=-1) if not segments else np.isin(
            layers, [v for _, _, v in segments]).any(axis=-1)
        if values == {RIGHT, LEFT} and not segments and layers.shape[-1] == 1:
            labels = layers[..., 0].astype(np.uint8)
            how = "label map 1 right, 2 left"
        else:
            labels = _side_labels(_split_two(lungs), volume.hu)
            cols = np.arange(labels.shape[2])
            centres = [((labels == s).sum(axis=(0, 1)) @ cols) / max((labels == s).sum(), 1) for s in (RIGHT, LEFT)]
            rest = lungs & (labels == 0)  # small pieces: the side of the midline they lie on
            labels[rest & (cols < np.mean(centres))] = RIGHT
            labels[rest & (cols >= np.mean(centres))] = LEFT
            how = "binary mask, split into right / left by the patient's x axis"
    if not labels.any():
        raise InputError(f"lung mask {path.name} holds no lung voxels")
    label = f"{'Slicer segmentation' if name else 'user file'} {name or path.name}"
    return LungMask(labels=labels,
                    source={"source": label, "method": f"given by the user ({how}); labels 1 right, 2 left"})
