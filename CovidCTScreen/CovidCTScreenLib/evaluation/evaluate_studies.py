"""covidct-evaluate on CT volumes: each study through ``pipeline.screen`` (slice model, lesions, category), measured

- at study level: the binary slice model's study rule (COVID-19 vs the rest; AUC over the positive-slice fraction,
  CIs resampling patients) and the three-class category against the study label (a confusion matrix);
- at slice level, where slice labels exist (COVID-CT-MD, or a studies CSV's ``slice_labels``): each per-slice score
  against the radiologists' infected-slice labels: the slice model's P(COVID-19) and the lesion % of the slice's
  lung by the HU bands and by the lesion UNet. AUC with a 95 % block-bootstrap CI: neighbouring slices are
  correlated, so blocks of ``BLOCK_MM`` of consecutive slices (per study) are resampled, not single slices.
  Only the lung slices the pipeline scores count; labelled-infected slices outside them are counted apart.
- per lung, where lobe labels exist (COVID-CT-MD: columns LLL, LUL, RLL, RML, RUL): each lung's per-slice lesion %
  against "a lobe of this lung infected on this slice", and the lungs the radiologists labelled against the lungs
  the distribution calls involved (its "bilateral" evidence).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import Cancelled, InputError
from .metrics import bootstrap_cis, roc_auc
from ..report.report import slice_table

BLOCK_MM = 10.0  # block length of the slice-level bootstrap (about the size of a lesion focus)
LOBE_SIDES = {"left": (0, 1), "right": (2, 3, 4)}  # COVID-CT-MD lobe columns: LLL, LUL, RLL, RML, RUL
SLICE_SCORES = {"slice_model": "slice model P(COVID-19)", "hu_bands": "HU bands lesion % of the slice's lung",
                "learned": "lesion UNet lesion % of the slice's lung"}


def screen_study(study, package, device, batch_size, cancel) -> dict:
    """What the evaluation keeps of one screened study (no volume): slice scores, slice labels, verdict, extents."""
    from ..screening.pipeline import screen

    r = screen(study.path, model=package, device=device, batch_size=batch_size, heatmap=False, cancel=cancel)
    labels = study.labels_for(r.volume)
    k = np.asarray(r.slice_indices)
    rows = slice_table(r)  # the report's per-slice table: the same numbers as slice_scores.csv
    scores = {"slice_model": r.positive_probability.astype(np.float64),  # the table's P(COVID-19) column
              **{key: np.array([row["lesions_pct_of_lung"][key]["lesion_pct"] for row in rows])
                 for key in ("hu_bands", "learned")}}
    m = r.manifestations.summary
    per_lung = {}
    if study.lobe_labels is not None:
        from ..lesions.hu_bands import SIDES

        for side in SIDES.values():
            lobes = study.lobe_labels[:, list(LOBE_SIDES[side])].any(axis=1).astype(np.int8)
            per_lung[side] = {"slice_labels": replace(study, slice_labels=lobes).labels_for(r.volume)[k],
                              "scores": {key: r.manifestations.slice_extent(key, k, side)["lesion_pct"]
                                         for key in ("hu_bands", "learned")}}
    return {"study": study, "device": str(r.device), "slices": k, "slice_labels": labels[k], "per_lung": per_lung,
            "outside_positive": int((labels == 1).sum() - (labels[k] == 1).sum()),
            "spacing_z": float(r.volume.spacing[2]),
            "scores": scores,
            "verdict": r.verdict.to_dict(),
            "extent": {key: m[key]["per_lung"]["both"] for key in ("hu_bands", "learned")},
            "distribution": r.manifestations.distribution}


def slice_auc(labels: np.ndarray, scores: np.ndarray, blocks: np.ndarray, resamples: int) -> dict:
    """ROC AUC of ``scores`` against 0/1 ``labels`` with its block-bootstrap 95 % CI."""
    value = roc_auc(labels, scores)
    lo, hi = bootstrap_cis(lambda idx: {"auc": roc_auc(labels[idx], scores[idx])}, len(labels), blocks,
                           n=resamples)["auc"]
    return {"value": value, "ci95": [lo, hi]}


def slice_level(screened: list[dict], resamples: int) -> dict:
    """Per-study and pooled per-slice AUC of every score in ``SLICE_SCORES`` (studies with slice labels only)."""
    labelled = [s for s in screened if (s["slice_labels"] >= 0).any()]
    out = {"scores": SLICE_SCORES, "bootstrap": f"blocks of {BLOCK_MM:g} mm of consecutive slices resampled",
           "studies": {}}
    pooled = {"labels": [], "blocks": [], **{key: [] for key in SLICE_SCORES}}
    for n, s in enumerate(labelled):
        keep = s["slice_labels"] >= 0
        y = s["slice_labels"][keep].astype(bool)
        blocks = (s["slices"][keep] * s["spacing_z"] // BLOCK_MM).astype(np.int64)
        section = {"lung_slices": int(keep.sum()), "infected": int(y.sum()),
                   "infected_outside_lung_slices": s["outside_positive"], "auc": {}}
        for key in SLICE_SCORES:
            section["auc"][key] = slice_auc(y, s["scores"][key][keep], blocks, resamples)
            pooled[key].append(s["scores"][key][keep])
        if s["per_lung"]:
            section["per_lung"] = lung_level(s, blocks, keep, resamples)
        out["studies"][s["study"].patient] = section
        pooled["labels"].append(y)
        pooled["blocks"].append(blocks + n * 1_000_000)
    if len(labelled) > 1:
        y, blocks = np.concatenate(pooled["labels"]), np.concatenate(pooled["blocks"])
        out["pooled"] = {"lung_slices": int(len(y)), "infected": int(y.sum()),
                         "auc": {key: slice_auc(y, np.concatenate(pooled[key]), blocks, resamples)
                                 for key in SLICE_SCORES}}
    return out


def lung_level(s: dict, blocks: np.ndarray, keep: np.ndarray, resamples: int) -> dict:
    """Per lung: labelled infected slices, per-slice AUC of each lesion method, and labelled vs measured laterality."""
    out = {}
    for side, lung in s["per_lung"].items():
        y = lung["slice_labels"][keep] == 1
        out[side] = {"infected": int(y.sum()),
                     "labelled_involved": bool(y.any()),
                     "measured_involved": bool(s["distribution"]["per_lung"][side]["involved"]),
                     "auc": {key: slice_auc(y, lung["scores"][key][keep], blocks, resamples)
                             for key in ("hu_bands", "learned")}}
    return out


def three_class(screened: list[dict]) -> dict:
    """The category against the study label, for studies labelled COVID-19 / other pneumonia / normal."""
    from ..screening.verdict import CATEGORIES

    matrix = np.zeros((3, 3), int)
    for s in screened:
        if s["study"].label in CATEGORIES and s["verdict"]["category"] in CATEGORIES:
            matrix[CATEGORIES.index(s["study"].label), CATEGORIES.index(s["verdict"]["category"])] += 1
    return {"rows": "truth", "columns": "category", "labels": list(CATEGORIES), "matrix": matrix.tolist(),
            "correct": int(np.trace(matrix)), "studies": int(matrix.sum()),
            "note": "a category from stated rules (verdict.CATEGORY_RULES), not a probability: no AUC"}


def study_rows(screened: list[dict]) -> list[dict]:
    rows = []
    for s in screened:
        v, st = s["verdict"], s["study"]
        row = {"item": str(st.path), "label": st.label, "patient_id": st.patient, "lung_slices": len(s["slices"]),
               "category": v["category"], "pattern": v["pattern"], "reason": v["reason"],
               "severity_score": s["distribution"]["severity_score"]["total"],
               "bilateral": s["distribution"]["bilateral"],
               "peripheral_predominant": s["distribution"]["peripheral_predominant"],
               "lower_zone_predominant": s["distribution"]["lower_zone_predominant"],
               **_largest_zone(s["distribution"])}
        for key, e in s["extent"].items():
            row[f"{key}_ggo_pct"], row[f"{key}_consolidation_pct"] = e["ggo_pct"], e["consolidation_pct"]
        rows.append(row)
    return rows


def _largest_zone(distribution: dict) -> dict:
    pct, name = max((z["lesion_pct"], f"{side} {zone}") for side, zones in distribution["zones"].items()
                    for zone, z in zones.items())
    return {"largest_zone": name, "largest_zone_lesion_pct": pct}


def slice_rows(screened: list[dict]) -> list[dict]:
    """slice_predictions.csv: one row per scored lung slice of each study."""
    return [{"patient_id": s["study"].patient, "slice": int(k), "label": int(y) if y >= 0 else "",
             **{key: round(float(s["scores"][key][i]), 4) for key in SLICE_SCORES}}
            for s in screened for i, (k, y) in enumerate(zip(s["slices"], s["slice_labels"]))]


def screen_all(studies, package, device, batch_size, progress, cancel) -> tuple[list[dict], list[dict]]:
    """(screened, failed): one unreadable study is listed, not scored, and does not hide the others."""
    screened, failed = [], []
    for n, study in enumerate(studies):
        if cancel and cancel():
            raise Cancelled("cancelled by the user")
        try:
            screened.append(screen_study(study, package, device, batch_size, cancel))
        except InputError as e:
            failed.append({"study": str(study.path), "error": str(e)})
        if progress:
            progress("screening", 0.9 * (n + 1) / len(studies))
    if not screened:
        raise InputError(f"none of the {len(studies)} studies could be screened: {failed[0]['error']}")
    return screened, failed


def slices_png(s: dict, path) -> None:
    """Per-slice scores of one study against its slice labels (infected slices shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, y = s["slices"], s["slice_labels"]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    for i in k[y == 1]:
        ax.axvspan(i - 0.5, i + 0.5, color="#fdd0a2", lw=0)
    ax.plot(k, s["scores"]["slice_model"], color="#1f4e79", lw=1.2, label="slice model P(COVID-19)")
    ax.set(xlabel="slice index (inferior -> superior)", ylabel="P(COVID-19)", ylim=(0, 1))
    ax2 = ax.twinx()
    ax2.plot(k, s["scores"]["hu_bands"], color="#2ca02c", lw=1, label="HU bands lesion %")
    ax2.plot(k, s["scores"]["learned"], color="#d62728", lw=1, label="lesion UNet lesion %")
    ax2.set_ylabel("lesion % of the slice's lung")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=7)
    ax.set_title(f"{s['study'].patient} ({s['study'].label}): shaded = radiologists' infected slices; "
                 f"category {s['verdict']['category']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
