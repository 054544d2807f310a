"""The report folder: report.json, slice_scores.csv, lung_mask.nrrd, heatmap.nrrd and PNG overlays.

Written all at once (``output_folder.atomic_folder``): a failure or a cancel never leaves a half-written report.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
from pathlib import Path

import numpy as np

from . import RESEARCH_USE_NOTICE, __version__
from .output_folder import atomic_folder
from .preprocess import window_hu

SCHEMA = "covidctscreen.report"
SCHEMA_VERSION = 3  # 2: manifestations (GGO / consolidation extent, possible fibrotic streaks); 3: three-class
# category with its evidence (verdict.category / evidence / reason) and the distribution of disease
CLASS_DISPLAY = {"COVID": "COVID-19", "NonCOVID": "non-COVID-19"}


def _software() -> dict:
    import importlib.metadata as md

    versions = {"covidctscreen": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "torch", "monai", "SimpleITK", "scikit-image", "pydicom"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def slice_z_mm(volume, k: int) -> float:
    """Patient z (LPS, mm) of axial slice k."""
    direction = np.asarray(volume.direction).reshape(3, 3)
    return float(volume.origin[2] + direction[2, 2] * k * volume.spacing[2])


def build_report(result, files: dict) -> dict:
    """The report.json document (schema ``SCHEMA`` version ``SCHEMA_VERSION``)."""
    vol, card, verdict = result.volume, result.model.card, result.verdict
    labels = result.model.labels
    slices = [{"slice": int(k), "z_mm": round(slice_z_mm(vol, int(k)), 2),
               "probabilities": {CLASS_DISPLAY.get(lab, lab): round(float(p), 4) for lab, p in zip(labels, row)},
               "positive": bool(row[result.model.positive_index] >= verdict.slice_threshold)}
              for k, row in zip(result.slice_indices, result.probabilities)]
    pos = result.positive_probability
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "notice": RESEARCH_USE_NOTICE,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {"source": vol.source, "shape_zyx": list(vol.shape), "spacing_mm_xyz": list(vol.spacing),
                  "origin_lps_mm": list(vol.origin), "direction": list(vol.direction), **vol.meta},
        "model": {"name": result.model.name, "path": str(result.model.path),
                  "weights_sha256": card["weights_sha256"], "architecture": card["architecture"],
                  "task": card["task"], "trained_on": card["training"]["train"],
                  "validated_on": card["validation"]["split"],
                  "validation_at_operating_point": {k: card["validation"]["at_operating_point"][k]
                                                    for k in ("auc", "sensitivity", "specificity", "f1")},
                  "calibration": card["calibration"], "input_mapping": card["input"]},
        "verdict": {**verdict.to_dict(),
                    "summary": (f"slice model (binary): {verdict.label}: {verdict.positive_slices} of "
                                f"{verdict.lung_slices} lung slices ({verdict.positive_fraction:.0%}) reach the "
                                f"COVID-19 slice threshold")},
        "slice_probability_summary": {"max": float(pos.max()), "mean": float(pos.mean()),
                                      "mean_top5": float(np.sort(pos)[-5:].mean())},
        "not_assessed": card.get("unsupported_classes", {}),
        "reliability": {
            "validated_on": card["validation"]["split"],
            "hu_ct": card.get("hu_ct_check", {}).get("summary", "no check on real HU CT recorded in the model card"),
            "caution": "The model learned from 8-bit CT figures in papers; on scanner CT its scores and the "
                       "study verdict are not validated. Use the heatmap and key slices to guide reading only.",
        },
        "lungs": {"volume_ml": {k: round(v, 1) for k, v in result.lung_volume_ml.items()},
                  "lung_slices": int(len(result.slice_indices)), "slices_total": int(vol.shape[0]),
                  "method": result.mask.source["method"]},
        "lung_mask": result.mask.source,
        "manifestations": (result.manifestations.summary if result.manifestations is not None
                            else {"not_assessed": "lesion measurement was switched off for this run"}),
        "distribution": (result.manifestations.distribution if result.manifestations is not None
                         else {"not_assessed": "lesion measurement was switched off for this run"}),
        "slices": slices,
        "key_slices": [{**t, "png": f"key_slice_{t['slice']:03d}.png"} for t in verdict.top_slices],
        "files": files,
        "device": result.device,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "software": _software(),
    }


def _write_csv(result, path: Path) -> None:
    labels = [CLASS_DISPLAY.get(lab, lab) for lab in result.model.labels]
    area = _per_slice_count(result.mask.labels) * result.volume.spacing[0] * result.volume.spacing[1] / 100.0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice", "z_mm", "lung_area_cm2"] + [f"p_{lab}" for lab in labels] + ["positive"])
        for k, row in zip(result.slice_indices, result.probabilities):
            w.writerow([int(k), f"{slice_z_mm(result.volume, int(k)):.2f}", f"{area[k]:.1f}"]
                       + [f"{p:.4f}" for p in row]
                       + [int(row[result.model.positive_index] >= result.verdict.slice_threshold)])


def _per_slice_count(labels: np.ndarray) -> np.ndarray:
    """Non-zero voxels of each axial slice (no volume-sized temporary)."""
    return np.count_nonzero(labels.reshape(len(labels), -1), axis=1)


def _write_image(result, array: np.ndarray, path: Path) -> None:
    from .volume_io import write_nrrd

    write_nrrd(result.volume, array, path)


def overlay_png(result, k: int, path: Path, title: str) -> None:
    """One axial slice: CT in the lung window, Grad-CAM heatmap, lung outline (radiological view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol = result.volume
    aspect = vol.spacing[1] / vol.spacing[0]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.imshow(window_hu(vol.hu[k]), cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="bilinear")
    if result.heatmap is not None:
        heat = np.ma.masked_less(result.heatmap[k], 0.05)
        im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=0.45, aspect=aspect)
        fig.colorbar(im, ax=ax, fraction=0.04, pad=0.01, label="Grad-CAM x P(COVID-19)")
    ax.contour(result.mask.labels[k] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_title(title, fontsize=10)
    ax.text(0.01, 0.01, "R", color="w", transform=ax.transAxes)
    ax.text(0.97, 0.01, "L", color="w", transform=ax.transAxes)
    ax.set_axis_off()
    ax.text(0.5, -0.01, "Research use only - not for clinical diagnosis", transform=ax.transAxes, ha="center",
            va="top", fontsize=8, color="firebrick")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def lesions_png(result, k: int, path: Path) -> None:
    """One axial slice: CT, HU-band lesions, learned lesions and possible fibrotic streaks side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol, found = result.volume, result.manifestations
    aspect = vol.spacing[1] / vol.spacing[0]
    colours = np.array([[0, 0, 0, 0], [0.1, 0.9, 0.1, 0.5], [0.95, 0.1, 0.1, 0.5]])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), dpi=90)
    panels = [("CT (lung window)", None), ("HU bands", found.hu_bands[k]),
              ("lesion UNet" + (" (not run)" if found.learned is None else ""),
               None if found.learned is None else found.learned[k]),
              ("possible fibrotic streaks", found.streaks[k].astype(np.uint8) * 2)]
    for ax, (title, labels) in zip(axes, panels):
        ax.imshow(window_hu(vol.hu[k]), cmap="gray", vmin=0, vmax=1, aspect=aspect)
        if labels is not None:
            ax.imshow(colours[labels], aspect=aspect)
        ax.contour(result.mask.labels[k] > 0, levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(f"slice {k}: green GGO, red consolidation / streak candidate. Research use only - extent "
                 f"figures are not validated on CT volumes", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def scores_png(result, path: Path) -> None:
    """COVID-19 probability against slice position, with the slice threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = result.verdict
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    ax.plot(result.slice_indices, result.positive_probability, "o-", ms=3)
    ax.axhline(v.slice_threshold, color="firebrick", ls="--", lw=1, label=f"slice threshold {v.slice_threshold:.2f}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("axial slice index (inferior -> superior)")
    ax.set_ylabel("P(COVID-19)")
    ax.set_title(f"{v.label}: {v.positive_slices}/{v.lung_slices} slices positive", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write every report file into ``out_dir`` at once; return its path."""
    with atomic_folder(out_dir, overwrite) as tmp:
        files = {"report": "report.json", "slice_scores": "slice_scores.csv", "lung_mask": "lung_mask.nrrd",
                 "scores_plot": "slice_scores.png"}
        _write_csv(result, tmp / files["slice_scores"])
        _write_image(result, result.mask.labels, tmp / files["lung_mask"])
        if result.heatmap is not None:
            files["heatmap"] = "heatmap.nrrd"
            _write_image(result, result.heatmap, tmp / files["heatmap"])
        scores_png(result, tmp / files["scores_plot"])
        if result.manifestations is not None:
            found = result.manifestations
            files |= {"lesions_hu_bands": "lesions_hu_bands.nrrd",
                      "fibrotic_streak_candidates": "fibrotic_streak_candidates.nrrd"}
            _write_image(result, found.hu_bands, tmp / files["lesions_hu_bands"])
            _write_image(result, found.streaks.view(np.uint8), tmp / files["fibrotic_streak_candidates"])
            per_slice = _per_slice_count(found.hu_bands)
            if found.learned is not None:
                files["lesions_learned"] = "lesions_learned.nrrd"
                _write_image(result, found.learned, tmp / files["lesions_learned"])
                per_slice = per_slice + _per_slice_count(found.learned)
            k = int(np.argmax(per_slice))
            files["lesions_plot"] = f"lesions_slice_{k:03d}.png"
            lesions_png(result, k, tmp / files["lesions_plot"])
        for t in result.verdict.top_slices:
            k = t["slice"]
            overlay_png(result, k, tmp / f"key_slice_{k:03d}.png",
                        f"slice {k} (z {slice_z_mm(result.volume, k):.0f} mm): P(COVID-19) {t['probability']:.2f}")
        (tmp / files["report"]).write_text(json.dumps(build_report(result, files), indent=2) + "\n")
    return Path(out_dir)
