"""covidct-evaluate's engine: run a model package on labelled data and measure it, with bootstrap CIs.

Three kinds of labelled data, told apart by their layout (``detect_data``):

- ``slices``: a folder with one sub-folder per class (``CT_COVID/``, ``CT_NonCOVID/``), or a CSV
  ``path,label[,patient_id]``; scored as ``covidct-screen`` scores a slice (the card's TTA and temperature);
- ``studies``: a CSV ``study,label[,patient_id][,slice_labels]`` (a volume file or DICOM folder per row), a folder
  holding one such CSV, or a COVID-CT-MD folder (``Index.csv``, slice labels); each study goes through
  ``pipeline.screen``, the card's study rule and the three-class category, and is measured at slice level where
  slice labels exist (``evaluate_studies``);
- ``segmentation``: a folder with ``images/`` and ``masks/`` (0 background, 1 GGO, 2 consolidation; or 0/255).

``evaluate_to_folder`` writes metrics.json, predictions.csv and the plots all at once or not at all.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import RESEARCH_USE_NOTICE, __version__
from ..input.datasets import Item, csv_header, csv_items, folder_items, load_images
from ..errors import Cancelled, InputError
from .metrics import bootstrap_cis, calibration_bins, confusion_metrics, roc_auc
from ..models.model_package import SLICE_CLASSIFICATION, ModelPackage, load_package

SCHEMA = "covidctscreen.evaluation"
SCHEMA_VERSION = 1
BOOTSTRAP_RESAMPLES = 2000
CI_METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "auc")
Progress = Callable[[str, float], None]


@dataclass
class Evaluation:
    kind: str  # "slices" | "studies" | "segmentation"
    document: dict  # metrics.json
    rows: list[dict]  # predictions.csv, one row per item
    curves: dict = field(default_factory=dict)  # what the plots need (labels, scores, thresholds, ...)


def detect_data(data: str | os.PathLike) -> tuple[str, Path]:
    """(kind, path) of a labelled data set; the path is the CSV for CSV-described sets."""
    data = Path(data)
    if data.is_file():
        header = csv_header(data) if data.suffix.lower() == ".csv" else []
        if "study" in header and "label" in header:
            return "studies", data
        if "path" in header and "label" in header:
            return "slices", data
        raise InputError(f"{data}: expected a CSV with a header 'path,label[,patient_id]' (slices) or "
                         f"'study,label[,patient_id]' (studies)")
    if not data.is_dir():
        raise InputError(f"{data} does not exist")
    if (data / "images").is_dir() and (data / "masks").is_dir():
        return "segmentation", data
    if (data / "Index.csv").is_file():
        return "studies", data  # COVID-CT-MD layout (volume_datasets.covid_ct_md_studies)
    study_csvs = [p for p in sorted(data.glob("*.csv")) if "study" in csv_header(p)]
    if len(study_csvs) == 1:
        return "studies", study_csvs[0]
    if len(study_csvs) > 1:
        raise InputError(f"{data} holds several study lists ({', '.join(p.name for p in study_csvs)}): name one")
    if any(p.is_dir() for p in data.iterdir()):
        return "slices", data
    raise InputError(f"{data}: not a labelled data set (class sub-folders, images/ + masks/, or a CSV list)")


def evaluate(data: str | os.PathLike, model: str | os.PathLike | ModelPackage | None = None, device: str = "auto",
             thresholds: tuple[float, ...] = (), batch_size: int | None = None,
             resamples: int = BOOTSTRAP_RESAMPLES, progress: Progress | None = None,
             cancel: Callable[[], bool] | None = None) -> Evaluation:
    """Score ``model`` on the labelled ``data`` and measure it (see the module docstring)."""
    t0 = time.perf_counter()
    package = model if isinstance(model, ModelPackage) else load_package(model)
    kind, path = detect_data(data)
    if kind == "segmentation":
        from .evaluate_segmentation import evaluate_segmentation

        result = Evaluation("segmentation", *evaluate_segmentation(path, package, device, resamples, progress, cancel))
    else:
        package.require(SLICE_CLASSIFICATION, f"evaluating on {kind}")
        for t in thresholds:
            if not 0.0 <= t <= 1.0:
                raise InputError(f"threshold {t} is not a probability in [0, 1]")
        score = _score_slices if kind == "slices" else _score_studies
        result = score(path, package, device, thresholds, batch_size, resamples, progress, cancel)
    result.document = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "software": {"covidctscreen": __version__, "python": platform.python_version()},
        "notice": RESEARCH_USE_NOTICE,
        "model": {"name": package.name, "path": str(package.path), "weights_sha256": package.info.weights_sha256,
                  "architecture": package.info.architecture,
                  "labels": package.labels,
                  "task": package.task},
        **result.document,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return result


def evaluate_to_folder(data, out_dir: str | os.PathLike, overwrite: bool = False, progress: Progress | None = None,
                       **kwargs) -> Evaluation:
    """``evaluate`` and write metrics.json, predictions.csv and the PNG plots into ``out_dir`` (all or nothing)."""
    from .evaluation_plots import write_plots
    from ..report.output_folder import atomic_folder, check_output_folder

    source = detect_data(data)[1]  # a study list's CSV, or the image folder (results may sit beside a CSV)
    check_output_folder(out_dir, overwrite, inputs=[source])
    result = evaluate(data, progress=progress, **kwargs)
    with atomic_folder(out_dir, overwrite, inputs=[source]) as tmp:
        result.document["files"] = {"metrics": "metrics.json", "predictions": "predictions.csv",
                                    **write_plots(result, tmp)}
        _write_rows(result.rows, tmp / "predictions.csv")
        if result.curves.get("slice_rows"):
            result.document["files"]["slice_predictions"] = "slice_predictions.csv"
            _write_rows(result.curves["slice_rows"], tmp / "slice_predictions.csv")
        (tmp / "metrics.json").write_text(json.dumps(json_ready(result.document), indent=2, allow_nan=False) + "\n")
    if progress:
        progress("write", 1.0)
    return result


def binary_section(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray, groups: np.ndarray,
                   resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Point values and percentile-bootstrap 95 % CIs of accuracy ... F1 (of ``predicted``) and the ROC AUC
    (of ``scores``), resampling the ``groups`` (patients)."""
    labels, scores, predicted = np.asarray(labels, bool), np.asarray(scores, float), np.asarray(predicted, bool)

    def statistic(idx: np.ndarray) -> dict:
        m = confusion_metrics(labels[idx], predicted[idx])
        return {k: m[k] for k in CI_METRICS if k != "auc"} | {"auc": roc_auc(labels[idx], scores[idx])}

    point = confusion_metrics(labels, predicted)
    cis = bootstrap_cis(statistic, len(labels), groups, n=resamples)
    section = {k: point[k] for k in ("n", "tp", "fp", "tn", "fn")}
    for name, value in statistic(np.arange(len(labels))).items():
        section[name] = {"value": value, "ci95": list(cis[name])}
    return section


def _groups_summary(items: list[Item]) -> tuple[np.ndarray, str]:
    groups = np.array([i.patient for i in items])
    return groups, "patients" if len(set(groups)) < len(groups) else "images"


def _data_summary(kind: str, path: Path, items: list[Item], labels: list[str], unit: str) -> dict:
    counts = np.bincount([i.label for i in items], minlength=len(labels))
    return {"kind": kind, "source": str(path), "items": len(items),
            "per_class": {lab: int(c) for lab, c in zip(labels, counts)},
            "patients": len({i.patient for i in items}) if unit == "patients" else None,
            "bootstrap_unit": unit}


def _thresholds(package: ModelPackage, extra: tuple[float, ...]) -> dict[str, float]:
    named = {"operating_point": package.info.slice_threshold}
    named.update({f"threshold_{t:g}": float(t) for t in extra})
    return named


def _confusion(labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict:
    matrix = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    return {"rows": "truth", "columns": "prediction", "labels": names, "matrix": matrix.tolist()}


def _binary_names(package: ModelPackage) -> list[str]:
    """[negative, positive] class names of a study-level (positive vs rest) decision."""
    positive = package.info.positive_label
    others = [lab for lab in package.labels if lab != positive]
    return [others[0] if len(others) == 1 else f"not {positive}", positive]


def _predicted_class(prob: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """The positive class where its probability reaches ``threshold``, else the likeliest other class."""
    others = prob.copy()
    others[:, positive] = -np.inf
    return np.where(prob[:, positive] >= threshold, positive, others.argmax(1))


def _score_slices(path, package, device, thresholds, batch_size, resamples, progress, cancel) -> Evaluation:
    from ..models.inference import calibrated_probabilities, select_device

    items = csv_items(path, package.labels) if path.is_file() else folder_items(path, package.labels)
    groups, unit = _groups_summary(items)
    size = package.info.input_size
    images = load_images(items, size, progress=(lambda f: progress("load", 0.3 * f)) if progress else None)
    dev = select_device(device)
    prob = calibrated_probabilities(package, package.build(dev), images, dev, batch_size,
                                    (lambda f: progress("inference", 0.3 + 0.5 * f)) if progress else None, cancel)
    y = np.array([i.label for i in items])
    pos = package.positive_index
    truth, score = y == pos, prob[:, pos]
    document = {"data": _data_summary("slices", path, items, package.labels, unit), "device": str(dev),
                "positive_label": package.info.positive_label, "thresholds": {}, "results": {}}
    rows = [{"item": str(i.path), "label": package.labels[i.label], "patient_id": i.patient,
             **{f"p_{lab}": round(float(p), 6) for lab, p in zip(package.labels, row)}}
            for i, row in zip(items, prob)]
    named = _thresholds(package, thresholds)
    for n, (name, t) in enumerate(named.items()):
        _check_cancel(cancel)
        predicted = _predicted_class(prob, pos, t)
        section = binary_section(truth, score, predicted == pos, groups, resamples)
        section["confusion_matrix"] = _confusion(y, predicted, package.labels)
        document["thresholds"][name] = t
        document["results"][name] = section
        for row, p in zip(rows, predicted):
            row[f"predicted_at_{name}"] = package.labels[p]
        if progress:
            progress("metrics", 0.8 + 0.2 * (n + 1) / len(named))
    document["calibration"] = {**calibration_bins(truth, score), "probability": f"P({package.info.positive_label})",
                               "after": "the model card's temperature scaling"}
    return Evaluation("slices", document, rows, {"truth": truth, "score": score, "thresholds": named,
                                                  "labels": package.labels,
                                                  "positive_label": package.info.positive_label})


def _score_studies(path, package, device, thresholds, batch_size, resamples, progress, cancel) -> Evaluation:
    from .evaluate_studies import screen_all, slice_level, slice_rows, study_rows, three_class
    from ..screening.verdict import study_verdict
    from ..input.volume_datasets import read_studies

    studies = read_studies(path)
    min_fraction = package.info.study_min_fraction
    positive_label = package.info.positive_label
    screened, failed = screen_all(studies, package, device, batch_size, progress, cancel)
    kept = [s["study"] for s in screened]
    groups = np.array([st.patient for st in kept])
    unit = "patients" if len(set(groups)) < len(groups) else "studies"
    truth = np.array([st.label == "COVID-19" for st in kept])
    document = {"data": {"kind": "studies", "source": str(path), "items": len(kept),
                         "per_class": {lab: sum(st.label == lab for st in kept)
                                       for lab in sorted({st.label for st in kept})},
                         "patients": len(set(groups)), "bootstrap_unit": unit, "failed": failed},
                "device": screened[0]["device"], "positive_label": positive_label,
                "study_rule": package.card["study_rule"], "thresholds": {}, "results": {},
                "calibration": {"not_applicable": "the study rule yields a fraction of positive slices, "
                                                  "not a probability"},
                "three_class": three_class(screened), "slice_level": slice_level(screened, resamples)}
    rows = study_rows(screened)
    named = _thresholds(package, thresholds)
    curves = {}
    for name, t in named.items():
        verdicts = [study_verdict(s["slices"], s["scores"]["slice_model"], t, min_fraction) for s in screened]
        fraction = np.array([v.positive_fraction for v in verdicts])
        positive = np.array([v.positive for v in verdicts])
        section = binary_section(truth, fraction, positive, groups, resamples)
        section["confusion_matrix"] = _confusion(truth.astype(int), positive.astype(int), _binary_names(package))
        section["score"] = "fraction of lung slices at or above the slice threshold (AUC is over this fraction)"
        document["thresholds"][name] = t
        document["results"][name] = section
        curves[name] = fraction
        for row, v in zip(rows, verdicts):
            row[f"positive_fraction_at_{name}"] = round(v.positive_fraction, 6)
            row[f"verdict_at_{name}"] = v.label
    rows += [{"item": f["study"], "error": f["error"]} for f in failed]
    if progress:
        progress("metrics", 1.0)
    return Evaluation("studies", document, rows, {"truth": truth, "score": curves["operating_point"],
                                                   "thresholds": {"operating_point": min_fraction},
                                                   "labels": package.labels, "positive_label": positive_label,
                                                   "score_name": "fraction of positive slices",
                                                   "screened": screened, "slice_rows": slice_rows(screened)})


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel and cancel():
        raise Cancelled("cancelled by the user")


def _write_rows(rows: list[dict], path: Path) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def json_ready(value):
    """``value`` with numpy scalars made plain and NaN/inf (undefined metrics) made null."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
