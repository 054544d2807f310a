"""Lesion segmentation evaluation: per-class Dice, IoU and area error against ``masks/``, with bootstrap CIs
over images, and a sheet of the worst and best cases."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..input.datasets import read_image, read_lesion_mask, segmentation_pairs
from ..errors import Cancelled, InputError
from .metrics import bootstrap_cis, overlap_metrics

CLASSES = {"ggo": (1,), "consolidation": (2,), "infection": (1, 2, 3)}  # 3: a 0/255 mask (type unknown)
SHEET_CASES = 3


def class_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.isin(labels, values) for name, values in CLASSES.items()}


def segmentation_section(truths: list[np.ndarray], preds: list[np.ndarray], resamples: int) -> tuple[dict, list]:
    """Summary per class (mean Dice and IoU over images with 95 % CIs, pooled Dice, area error) and per-image
    rows. GGO and consolidation are scored only on masks that tell them apart (0/1/2)."""
    typed = np.array([not (t == 3).any() for t in truths])
    per_image = []
    for t, p in zip(truths, preds):
        tm, pm = class_masks(t), class_masks(p)
        per_image.append({name: overlap_metrics(tm[name], pm[name]) for name in CLASSES})
    summary = {}
    for name in CLASSES:
        use = np.flatnonzero(typed) if name != "infection" else np.arange(len(truths))
        if not len(use):
            summary[name] = {"not_assessed": "the masks are binary (0/255): lesion types are unknown"}
            continue
        dice = np.array([per_image[i][name]["dice"] for i in use])
        iou = np.array([per_image[i][name]["iou"] for i in use])
        err = np.array([per_image[i][name]["area_error"] for i in use])
        total = sum(per_image[i][name]["true_area"] + per_image[i][name]["predicted_area"] for i in use)
        pooled = sum(2 * (class_masks(truths[i])[name] & class_masks(preds[i])[name]).sum() for i in use)

        def statistic(idx, dice=dice, iou=iou):
            return {"dice": _nanmean(dice[idx]), "iou": _nanmean(iou[idx])}

        cis = bootstrap_cis(statistic, len(use), None, n=resamples)
        point = statistic(np.arange(len(use)))
        summary[name] = {
            "images": int(len(use)), "images_with_lesion": int(sum(per_image[i][name]["true_area"] > 0 for i in use)),
            "dice": {"value": point["dice"], "ci95": list(cis["dice"])},
            "iou": {"value": point["iou"], "ci95": list(cis["iou"])},
            "pooled_dice": float(pooled / total) if total else float("nan"),
            "mean_area_error": _nanmean(err), "mean_abs_area_error": _nanmean(np.abs(err)),
        }
    return summary, per_image


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def evaluate_segmentation(path: Path, package, device: str, resamples: int,
                          progress: Callable[[str, float], None] | None, cancel: Callable[[], bool] | None):
    """Segment every image of ``path/images`` with the lesion model ``package`` and score it against ``masks/``.
    Returns (metrics document, prediction rows, what the plots need)."""
    from ..models.model_package import LESION_SEGMENTATION

    package.require(LESION_SEGMENTATION, "images/ + masks/ data (lesion segmentation)")
    from ..models.inference import select_device
    from ..lesions.lesion_seg import load_lesion_model, predict_image

    pairs = segmentation_pairs(path)
    images = [read_image(i) for i, _ in pairs]
    truths = [read_lesion_mask(m) for _, m in pairs]
    for (image_path, _), image, truth in zip(pairs, images, truths):
        if image.shape[:2] != truth.shape:
            raise InputError(f"{image_path.name}: image {image.shape[:2]} and mask {truth.shape} differ in size")
    device_used = str(select_device(device))
    model = load_lesion_model(package.path, device_used)
    preds = []
    for n, image in enumerate(images):
        if cancel and cancel():
            raise Cancelled("cancelled by the user")
        preds.append(predict_image(model, image))
        if progress:
            progress("inference", 0.9 * (n + 1) / len(images))
    summary, per_image = segmentation_section(truths, preds, resamples)
    rows = []
    for (image_path, mask_path), scores in zip(pairs, per_image):
        row = {"item": str(image_path), "mask": str(mask_path)}
        for name, m in scores.items():
            row |= {f"{name}_{k}": (round(v, 6) if isinstance(v, float) else v) for k, v in m.items()}
        rows.append(row)
    document = {"data": {"kind": "segmentation", "source": str(path), "items": len(pairs),
                         "typed_masks": int(sum(not (t == 3).any() for t in truths)), "bootstrap_unit": "images"},
                "device": device_used, "classes": {"ggo": 1, "consolidation": 2, "infection": "1 or 2 (or 255)"},
                "results": summary,
                "dice_convention": "per image; NaN (null) where truth and prediction are both empty, "
                                   "left out of the mean"}
    if progress:
        progress("metrics", 1.0)
    return document, rows, {"images": images, "truths": truths, "preds": preds,
                            "order": np.argsort([np.nan_to_num(s["infection"]["dice"], nan=1.0) for s in per_image],
                                                kind="stable")}


def cases_png(result, path: Path) -> None:
    """Worst and best cases by infection Dice: image, truth and prediction overlaid (green GGO, red consolidation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(result.curves["order"])
    picks = order[:SHEET_CASES] + [i for i in order[::-1][:SHEET_CASES] if i not in order[:SHEET_CASES]]
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3 * len(picks)), dpi=90, squeeze=False)
    colours = np.array([[0, 0, 0, 0], [0.1, 0.9, 0.1, 0.45], [0.95, 0.1, 0.1, 0.45], [1, 0.8, 0, 0.45]])
    for row, i in zip(axes, picks):
        image = result.curves["images"][i]
        grey = image if image.ndim == 2 else image.mean(-1)
        dice = result.rows[i]["infection_dice"]
        for ax, (title, labels) in zip(row, [("image", None), ("truth", result.curves["truths"][i]),
                                             ("prediction", result.curves["preds"][i])]):
            ax.imshow(grey, cmap="gray")
            if labels is not None:
                ax.imshow(colours[np.clip(labels, 0, 3)])
            ax.set_title(f"{Path(result.rows[i]['item']).name} {title}"
                         + (f" (infection Dice {dice:.2f})" if title == "prediction" and dice == dice else ""),
                         fontsize=8)
            ax.axis("off")
    fig.suptitle("Worst (top) and best (bottom) cases; green GGO, red consolidation, yellow untyped", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path)
    plt.close(fig)
