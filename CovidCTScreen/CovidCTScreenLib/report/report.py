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

from .. import RESEARCH_USE_NOTICE, __version__
from ..lesions.manifestations import CONSOLIDATION, GGO, METHOD_NAMES
from .output_folder import atomic_folder

SCHEMA = "covidctscreen.report"
SCHEMA_VERSION = 4  # 2: manifestations (GGO / consolidation extent, possible fibrotic streaks); 3: three-class
# category with its evidence (verdict.category / evidence / reason) and the distribution of disease; 4: per-slice
# lesion % (``slices`` ``lesions_pct_of_lung``, ``slice_columns``); key slices show the lead method's lesion %
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


def build_report(result, files: dict, keys: list[dict] | None = None, rows: list[dict] | None = None) -> dict:
    """The report.json document (schema ``SCHEMA`` version ``SCHEMA_VERSION``); ``rows``: its ``slice_table``."""
    vol, card, verdict = result.volume, result.model.card, result.verdict
    slices = [{**row, "z_mm": round(row["z_mm"], 2), "lung_area_cm2": round(row["lung_area_cm2"], 1),
               "probabilities": {lab: round(p, 4) for lab, p in row["probabilities"].items()},
               **({"lesions_pct_of_lung": {key: {name: round(v, 2) for name, v in e.items()}
                                           for key, e in row["lesions_pct_of_lung"].items()}}
                  if "lesions_pct_of_lung" in row else {})}
              for row in (rows if rows is not None else slice_table(result))]
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
        "verdict": {**verdict.to_dict(), "top_slices": _named(vol, verdict.top_slices),
                    "summary": (f"slice model (binary): {verdict.label}: {verdict.positive_slices} of "
                                f"{verdict.lung_slices} lung slices ({verdict.positive_fraction:.0%}) reach the "
                                f"COVID-19 slice threshold")},
        "slice_probability_summary": {"max": float(pos.max()), "mean": float(pos.mean()),
                                      "mean_top5": float(np.sort(pos)[-5:].mean())},
        "not_assessed": card.get("unsupported_classes", {}),
        "reliability": {
            "validated_on": card["validation"]["split"],
            "hu_ct": card.get("hu_ct_check", {}).get("summary", "no check on real HU CT recorded in the model card"),
            "per_slice_check": card.get("slice_label_check", {}).get(
                "summary", "no per-slice check against radiologists' labels recorded in the model card"),
            "caution": "The model learned from 8-bit CT figures in papers; on scanner CT its scores and the "
                       "study verdict are not validated. Use the heatmap and key slices to guide reading only.",
        },
        "lungs": {"volume_ml": {k: round(v, 1) for k, v in result.lung_volume_ml.items()},
                  "lung_slices": int(len(result.slice_indices)), "slices_total": int(vol.shape[0]),
                  "method": result.mask.source["method"]},
        "lung_mask": result.mask.source,
        "manifestations": (_named_manifestations(vol, result.manifestations.summary)
                           if result.manifestations is not None
                           else {"not_assessed": "lesion measurement was switched off for this run"}),
        "distribution": (result.manifestations.distribution if result.manifestations is not None
                         else {"not_assessed": "lesion measurement was switched off for this run"}),
        "slices": slices,
        "slice_columns": SLICE_COLUMNS,
        "key_slices": keys if keys is not None else key_slices(result),
        "key_slice_rule": ("evidence = the slice's rank by lesion area of the lead lesion method, ties broken by "
                           "P(COVID-19) (P(COVID-19) alone without lesions); "
                           f"the best slice of each lung third first, then the best others, at least "
                           f"{KEY_GAP_MM:g} mm and {KEY_GAP_SLICES} slices apart"),
        "pictures": {"window": {"width_hu": DISPLAY_WINDOW[0], "level_hu": DISPLAY_WINDOW[1]},
                     "heatmap_scale": {"min": 0.0, "max": round(heat_scale(result), 4),
                                       "note": "one scale for every picture of this study: 0 to the 99.9th "
                                               "percentile of the heatmap inside the lungs"}},
        "files": files,
        "device": result.device,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "software": _software(),
    }


def _named(volume, rows: list[dict]) -> list[dict]:
    """Rows that name a slice by index, with its DICOM instance number and z (mm) added."""
    return [{**r, "instance_number": instance_number(volume, r["slice"]),
             "z_mm": round(slice_z_mm(volume, r["slice"]), 2)} for r in rows]


def _named_manifestations(volume, summary: dict) -> dict:
    out = {**summary, "per_slice_pct": _named(volume, summary["per_slice_pct"])}
    streaks = summary.get("possible_fibrotic_streaks")
    if streaks and "slices" in streaks:
        out["possible_fibrotic_streaks"] = {**streaks, "slices": _named(volume, streaks["slices"])}
    return out


LESION_OUTLINE = {GGO: (0.1, 0.9, 0.1), CONSOLIDATION: (0.95, 0.1, 0.1)}  # lesion colours of every picture
CSV_PREFIX = {"learned": "unet", "hu_bands": "hu_bands"}  # lesion method -> slice_scores.csv column prefix
LESION_KINDS = {"ggo_pct": "ggo", "consolidation_pct": "consolidation", "lesion_pct": "lesion"}
SLICE_COLUMNS = {
    "slice": "axial slice index k (inferior to superior, LPS order); one row per lung slice the slice model scored",
    "lung_area_cm2": "lung mask area of the slice (cm2)",
    "probabilities": "slice classifier P(class), calibrated on 8-bit CT figures; not validated on HU CT",
    "positive": "P(COVID-19) reaches the slice threshold",
    "lesions_pct_of_lung": "GGO, consolidation and their sum (lesion) in % of the slice's measured lung (lung mask "
                           "less its 2 mm rim) by the lesion UNet (lead method) and the HU bands (second method) "
                           "(manifestations.slice_extent; the per-slice lesion % covidct-evaluate scores against "
                           "slice labels); absent when lesions were not measured or that method was not run",
}


def slice_table(result) -> list[dict]:
    """The per-slice table, built in this one place for slice_scores.csv, report.json ``slices``,
    slice_scores.png and covidct-evaluate: one row per lung slice the slice model scored, unrounded; with
    ``lesions_pct_of_lung`` ({method: {"ggo_pct", "consolidation_pct", "lesion_pct"}}, ``manifestations
    .slice_extent``) for each lesion method that was run, absent without lesions."""
    vol, ks = result.volume, np.asarray(result.slice_indices, int)
    labels = [CLASS_DISPLAY.get(lab, lab) for lab in result.model.labels]
    area = _per_slice_count(result.mask.labels)[ks] * vol.spacing[0] * vol.spacing[1] / 100.0
    found = result.manifestations
    extents = {} if found is None else {key: e for key in METHOD_NAMES
                                        if (e := found.slice_extent(key, ks)) is not None}
    rows = []
    for i, k in enumerate(ks):
        row = {"slice": int(k), "instance_number": instance_number(vol, int(k)), "z_mm": slice_z_mm(vol, int(k)),
               "lung_area_cm2": float(area[i]),
               "probabilities": {lab: float(p) for lab, p in zip(labels, result.probabilities[i])},
               "positive": bool(result.positive_probability[i] >= result.verdict.slice_threshold)}
        if extents:
            row["lesions_pct_of_lung"] = {key: {name: float(e[name][i]) for name in LESION_KINDS}
                                          for key, e in extents.items()}
        rows.append(row)
    return rows


def _write_csv(rows: list[dict], path: Path) -> None:
    """slice_scores.csv from ``slice_table``; lesion columns ``<method>_<ggo|consolidation|lesion>_pct_of_lung``
    only for the lesion methods that were run."""
    labels = list(rows[0]["probabilities"]) if rows else []
    methods = list(rows[0].get("lesions_pct_of_lung", {})) if rows else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice", "z_mm", "instance_number", "lung_area_cm2"] + [f"p_{lab}" for lab in labels]
                   + ["positive"] + [f"{CSV_PREFIX[m]}_{kind}_pct_of_lung" for m in methods
                                     for kind in LESION_KINDS.values()])
        for r in rows:
            w.writerow([r["slice"], f"{r['z_mm']:.2f}", "" if r["instance_number"] is None else r["instance_number"],
                        f"{r['lung_area_cm2']:.1f}"] + [f"{p:.4f}" for p in r["probabilities"].values()]
                       + [int(r["positive"])] + [f"{r['lesions_pct_of_lung'][m][k]:.2f}" for m in methods
                                                 for k in LESION_KINDS])


def _per_slice_count(labels: np.ndarray) -> np.ndarray:
    """Non-zero voxels of each axial slice (no volume-sized temporary)."""
    return np.count_nonzero(labels.reshape(len(labels), -1), axis=1)


def _write_image(result, array: np.ndarray, path: Path) -> None:
    from ..input.volume_io import write_nrrd

    write_nrrd(result.volume, array, path)


DISPLAY_WINDOW = (1500.0, -600.0)  # (width, level) HU: the radiologists' lung window for every picture
HEAT_ALPHA = 0.75  # opacity of the heatmap at the study's maximum; it fades with the value down to 0
KEY_SLICES = 5
KEY_GAP_MM, KEY_GAP_SLICES = 10.0, 3  # key slices lie at least this far apart (the larger of the two)
ZONES = ("lower", "middle", "upper")  # thirds of the lungs' cranio-caudal extent
WINDOW_TEXT = f"CT lung window W {DISPLAY_WINDOW[0]:g} / L {DISPLAY_WINDOW[1]:g} HU"
VIEW_TEXT = "axial, radiological view (patient's right on the image left)"


def slice_name(volume, k: int) -> str:
    """How a slice is named everywhere: DICOM instance number and z, or the slice index for non-DICOM input."""
    z = slice_z_mm(volume, k)
    number = instance_number(volume, k)
    return f"instance {number} (z {z:.1f} mm)" if number is not None else f"slice {k} (z {z:.1f} mm)"


def instance_number(volume, k: int):
    return volume.instance_numbers[k] if volume.instance_numbers else None


def lead_labels(result) -> tuple[str | None, np.ndarray | None, str | None]:
    """(the report's lead lesion method's key, its label volume (1 GGO, 2 consolidation), its name), or
    (None, None, None) when lesions were not measured."""
    found = result.manifestations
    if found is None:
        return None, None, None
    lead = found.summary["lead_method"]
    return lead, getattr(found, lead), METHOD_NAMES[lead]


def key_slices(result, n: int = KEY_SLICES) -> list[dict]:
    """Key slices chosen by evidence and spread over the lungs.

    Evidence of a lung slice = its rank by lesion area of the lead lesion method (an area, not a % of the slice's
    lung, so small apical lung sections do not win), ties broken by P(COVID-19); P(COVID-19) alone without lesions.
    The slice classifier does not lead: on HU CT it does not track the radiologists' infected slices
    (``reliability.per_slice_check``), the lesion extent does.
    The best slice of each lung third (lower, middle, upper) comes first, then the best remaining slices; every pick lies at least KEY_GAP_MM and KEY_GAP_SLICES from the others.
    """
    ks = np.asarray(result.slice_indices, int)
    prob = result.positive_probability
    lead, labels, method = lead_labels(result)
    lesion = result.manifestations.slice_extent(lead, ks)["lesion_pct"] if lead else None
    area = (labels[ks] > 0).sum(axis=(1, 2)) if lead else np.zeros(len(ks))
    evidence = np.empty(len(ks))
    evidence[np.lexsort((-prob, -area))] = np.linspace(1.0, 0.0, len(ks))  # most lesion first, then P(COVID-19)
    zone = np.minimum((3 * (ks - ks.min()) / max(ks.max() - ks.min() + 1, 1)).astype(int), 2)
    gap = max(KEY_GAP_SLICES, int(np.ceil(KEY_GAP_MM / result.volume.spacing[2])))
    order = np.argsort(-evidence, kind="stable")
    picks: list[int] = []
    for z in range(3):
        best = next((i for i in order if zone[i] == z and all(abs(ks[i] - ks[j]) >= gap for j in picks)), None)
        if best is not None:
            picks.append(best)
    for i in order:
        if len(picks) >= n:
            break
        if i not in picks and all(abs(ks[i] - ks[j]) >= gap for j in picks):
            picks.append(i)
    picks = sorted(picks[:n], key=lambda i: -evidence[i])
    return [{"slice": int(ks[i]), "instance_number": instance_number(result.volume, int(ks[i])),
             "z_mm": round(slice_z_mm(result.volume, int(ks[i])), 2), "name": slice_name(result.volume, int(ks[i])),
             "zone": ZONES[zone[i]], "probability": round(float(prob[i]), 4),
             "lesion_pct": round(float(lesion[i]), 2) if method else None, "lesion_method": method,
             "evidence": round(float(evidence[i]), 3),
             "png": f"key_slice_{int(ks[i]):03d}.png"} for i in picks]


def heat_scale(result) -> float:
    """The one heatmap scale of the study: its 99.9th percentile inside the lungs (0 when there is no heat)."""
    if result.heatmap is None:
        return 0.0
    inside = result.heatmap[result.mask.lungs > 0]
    return float(np.percentile(inside, 99.9)) if inside.size else 0.0


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_figure(result, n_panels: int, notes: list[str], colourbar: bool = False):
    """A figure of ``n_panels`` axial images at the CT's full resolution (one screen pixel per voxel column),
    a title band on top and a legend band below (legend handles, optional colour bar, ``notes`` lines and the
    research-use line); returns (fig, axes, legend axes, colour bar axes or None)."""
    plt = _plt()
    ny, nx = result.volume.shape[1:]
    h = int(round(ny * result.volume.spacing[1] / result.volume.spacing[0]))  # square pixels on screen
    lines = notes + ["Research use only - not for clinical diagnosis"]
    pad, top, legend_px, bar_px, line_px, dpi = 10, 50, 30, 60 if colourbar else 0, 17, 100
    bottom = legend_px + bar_px + line_px * len(lines) + pad
    width, height = n_panels * nx + (n_panels + 1) * pad, top + h + bottom
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = [fig.add_axes([(pad + i * (nx + pad)) / width, bottom / height, nx / width, h / height])
            for i in range(n_panels)]
    legend = fig.add_axes([pad / width, (bottom - legend_px) / height, 1 - 2 * pad / width, legend_px / height])
    legend.set_axis_off()
    fig.text(pad / width, pad / height, "\n".join(lines), fontsize=8.5, va="bottom", linespacing=1.3)
    bar = (fig.add_axes([3 * pad / width, (bottom - legend_px - 22) / height, min(0.6, 300 / width), 12 / height])
           if colourbar else None)
    return fig, axes, legend, bar


def _ct_panel(ax, result, k: int, title: str) -> None:
    width, level = DISPLAY_WINDOW
    ax.imshow(result.volume.hu[k], cmap="gray", vmin=level - width / 2, vmax=level + width / 2, aspect="auto",
              interpolation="nearest")
    ax.contour(result.mask.labels[k] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10, loc="left")
    for x, y, text in ((0.02, 0.5, "R"), (0.98, 0.5, "L"), (0.5, 0.98, "A"), (0.5, 0.02, "P")):
        ax.text(x, y, text, transform=ax.transAxes, color="yellow", fontsize=14, fontweight="bold",
                ha="center", va="center")


def overlay_png(result, k: int, path: Path, title: str, vmax: float) -> None:
    """One key slice at full resolution: CT in the lung window, the lead lesion method's GGO / consolidation
    outlines, Grad-CAM heatmap on the study's one scale (transparency follows the value, so there are no holes),
    lung outline, R/L/A/P, legend."""
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    plt = _plt()
    heat = result.heatmap is not None and vmax > 0
    _, lesions, method = lead_labels(result)
    fig, (ax,), legend, bar_ax = _panel_figure(result, 1, [WINDOW_TEXT, VIEW_TEXT] + (
        [f"lesion outlines: {method}"] if method else []) + (
        ["heatmap: where the slice model looked, not a lesion outline"] if heat else []), colourbar=heat)
    _ct_panel(ax, result, k, title)
    handles = [Line2D([], [], color="cyan", label="lung mask outline")]
    for code, name in ((GGO, "ground-glass opacity"), (CONSOLIDATION, "consolidation")):
        if lesions is not None and (lesions[k] == code).any():
            ax.contour(lesions[k] == code, levels=[0.5], colors=[LESION_OUTLINE[code]], linewidths=1.0)
            handles.append(Line2D([], [], color=LESION_OUTLINE[code], label=name))
    legend.legend(handles=handles, loc="center left", ncol=len(handles), fontsize=9, frameon=False)
    if heat:
        norm = np.clip(result.heatmap[k] / vmax, 0.0, 1.0)
        rgba = plt.get_cmap("inferno")(norm)
        rgba[..., 3] = HEAT_ALPHA * norm
        ax.imshow(rgba, aspect="auto", interpolation="nearest")
        bar = fig.colorbar(plt.cm.ScalarMappable(Normalize(0, vmax), "inferno"), cax=bar_ax, orientation="horizontal")
        bar.ax.tick_params(labelsize=7)
        bar.set_label("Grad-CAM x P(COVID-19), one scale for the study", fontsize=8)
    fig.savefig(path)
    plt.close(fig)


def lesions_png(result, k: int, path: Path) -> None:
    """One slice at full resolution: CT, HU-band lesions, learned lesions, and possible fibrotic streaks when
    that slice has any; R/L/A/P and a legend on every panel set."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = _plt()
    found = result.manifestations
    colours = np.array([[0, 0, 0, 0], [*LESION_OUTLINE[GGO], 0.5], [*LESION_OUTLINE[CONSOLIDATION], 0.5]])
    panels = [("CT", None), ("HU bands", found.hu_bands[k])]
    if found.learned is not None:  # None when the lesion UNet was not run
        panels.append(("lesion UNet", found.learned[k]))
    if found.streaks[k].any():
        panels.append(("possible fibrotic streaks", found.streaks[k].astype(np.uint8) * 3))
    colours = np.vstack([colours, [1.0, 0.85, 0.0, 0.8]])
    fig, axes, legend, _ = _panel_figure(result, len(panels), [
        f"{WINDOW_TEXT}; {VIEW_TEXT}", "extent figures are not validated on CT volumes (see the report's caution)"])
    for ax, (title, labels) in zip(axes, panels):
        _ct_panel(ax, result, k, f"{title}: {slice_name(result.volume, k)}")
        if labels is not None:
            ax.imshow(colours[labels], aspect="auto", interpolation="nearest")
    handles = [Patch(color=colours[1], label="ground-glass opacity"), Patch(color=colours[2], label="consolidation"),
               Line2D([], [], color="cyan", label="lung mask outline")]
    if len(panels) == 4:
        handles.append(Patch(color=colours[3], label="possible fibrotic streak"))
    legend.legend(handles=handles, loc="center left", ncol=len(handles), fontsize=9, frameon=False)
    fig.savefig(path)
    plt.close(fig)


def scores_png(result, rows: list[dict], path: Path, keys: list[dict]) -> None:
    """Per-slice evidence against slice position (z) from ``slice_table`` rows: the lesion % of each slice's lung
    by each lesion method (top panel, when measured) and the slice classifier's P(COVID-19) with its threshold
    (bottom panel), the key slices marked on both."""
    plt = _plt()
    v = result.verdict
    z = np.array([r["z_mm"] for r in rows])
    methods = list(rows[0].get("lesions_pct_of_lung", {})) if rows else []
    fig, axes = plt.subplots(2 if methods else 1, 1, figsize=(8, 5.6 if methods else 3.2), dpi=100, sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    if methods:
        ax = axes[0]
        for m, style in zip(methods, ("-", "--")):
            name = METHOD_NAMES[m] + (" (lead method)" if m == result.manifestations.summary["lead_method"]
                                           else " (second method)")
            ax.plot(z, [r["lesions_pct_of_lung"][m]["lesion_pct"] for r in rows], style, marker="o", ms=2.5,
                    lw=1.2, color={"learned": "#c0392b", "hu_bands": "#2e7d32"}[m], label=name)
        ax.set_ylim(0, max(5.0, 1.1 * max(r["lesions_pct_of_lung"][m]["lesion_pct"] for r in rows for m in methods)))
        ax.set_ylabel("lesion % of the\nslice's lung")
        ax.set_title("Lesions (GGO + consolidation) per slice", fontsize=10, loc="left", pad=14)
        ax.legend(loc="upper right", fontsize=8)
    ax = axes[-1]
    ax.plot(z, result.positive_probability, "o-", ms=3, color="#1f4e79", label="slice classifier P(COVID-19)")
    ax.axhline(v.slice_threshold, color="firebrick", ls="--", lw=1, label=f"slice threshold {v.slice_threshold:.2f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("P(COVID-19)")
    ax.set_title(f"Slice classifier (not validated on HU CT): {v.label}, {v.positive_slices}/{v.lung_slices} "
                 "slices positive", fontsize=10, loc="left", pad=6 if methods else 14)
    ax.legend(loc="upper left", fontsize=8)
    for a in axes:
        for i, t in enumerate(keys):
            a.axvline(t["z_mm"], color="grey", lw=0.8, ls=":", label="key slice" if i == 0 and a is ax else None)
    for t in keys:
        axes[0].text(t["z_mm"], axes[0].get_ylim()[1], t["name"].split(" (")[0].split()[-1], fontsize=7,
                     ha="center", va="bottom")
    ax.set_xlabel("z (mm): inferior -> superior; key slices marked by their "
                  + ("instance number" if result.volume.instance_numbers else "slice index"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write every report file into ``out_dir`` at once (with ``dicom/`` SEG and SR when the input was DICOM);
    return its path."""
    from .report_html import write_html

    keys = key_slices(result)
    with atomic_folder(out_dir, overwrite) as tmp:
        files = {"report": "report.json", "html": "report.html", "slice_scores": "slice_scores.csv",
                 "lung_mask": "lung_mask.nrrd", "scores_plot": "slice_scores.png"}
        rows = slice_table(result)
        _write_csv(rows, tmp / files["slice_scores"])
        _write_image(result, result.mask.labels, tmp / files["lung_mask"])
        if result.heatmap is not None:
            files["heatmap"] = "heatmap.nrrd"
            _write_image(result, result.heatmap, tmp / files["heatmap"])
        scores_png(result, rows, tmp / files["scores_plot"], keys)
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
        vmax = heat_scale(result)
        for t in keys:
            evidence = (f"lesions {t['lesion_pct']:.1f} % of the slice's lung ({t['lesion_method']}); "
                        if t["lesion_pct"] is not None else "") + f"classifier P(COVID-19) {t['probability']:.2f}"
            overlay_png(result, t["slice"], tmp / t["png"], f"{t['name']}, {t['zone']} zone\n{evidence}", vmax)
        report = build_report(result, files, keys, rows)
        if result.volume.dicom_files:
            from .dicom_export import write_dicom

            files |= write_dicom(result, report, tmp)
        write_html(report, tmp, tmp / files["html"])
        (tmp / files["report"]).write_text(json.dumps(report, indent=2) + "\n")
    return Path(out_dir)
