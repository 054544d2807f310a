"""Turn a training result into a model package CovidCTScreen loads (weights + model card)."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

import numpy as np

from CovidCTScreenLib import __version__
from CovidCTScreenLib.models.calibration import softmax
from CovidCTScreenLib.evaluation.metrics import binary_metrics, bootstrap_ci, youden_threshold
from CovidCTScreenLib.models.model_package import SLICE_CLASSIFICATION, ModelPackage, save_package
from CovidCTScreenLib.input.preprocess import CROP_MARGIN, INPUT_SIZE, LUNG_WINDOW

from .calibrate import fit_temperature
from .methods import DESCRIPTIONS
from .trainer import TrainResult

# The plain ImageNet EfficientNet-Lite0 fine-tune of the project brief (AdamW 3e-4, 25 epochs, CPU).
PLAIN_BASELINE_VAL = {"auc": 0.855, "f1": 0.76}
STUDY_MIN_FRACTION = 0.05  # seed 002: a study is positive when > 5 % of its lung slices are positive


def export_package(result: TrainResult, out: str | Path, *, name: str, labels: list[str], positive_label: str,
                   val_labels: np.ndarray, data: dict, command: str, hflip_tta: bool = False,
                   val_patients: list[str] | None = None) -> ModelPackage:
    """Calibrate on validation, pick the operating point, write the package and return it."""
    pos = labels.index(positive_label)
    method = result.config["method"]
    temperature = fit_temperature(result.val_logits, val_labels)
    prob = softmax(result.val_logits, temperature)[:, pos]
    threshold = youden_threshold(val_labels == pos, prob)
    at_half = binary_metrics(val_labels == pos, prob, 0.5)
    at_op = binary_metrics(val_labels == pos, prob, threshold)
    auc_ci = bootstrap_ci(val_labels == pos, prob, groups=np.asarray(val_patients) if val_patients else None)
    card = {
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "software": {"covidctscreen": __version__, "python": platform.python_version()},
        "task": SLICE_CLASSIFICATION,
        "task_description": "slice classification: COVID-19 vs non-COVID-19 (axial chest CT slice)",
        "architecture": result.config["architecture"],
        "labels": labels,
        "positive_label": positive_label,
        "unsupported_classes": {
            "other pneumonia": "not learned: the training data has no labelled other-pneumonia class",
            "normal": "not separated from other non-COVID findings: COVID-CT's NonCOVID class mixes both",
        },
        "input": {
            "channels": 1, "spatial_shape": [result.image_size or INPUT_SIZE] * 2, "value_range": [0.0, 1.0],
            "hu_window": list(LUNG_WINDOW),
            "hu_mapping": "HU clipped to the window and scaled linearly to [0, 1] (W1200/L-500 lung window, matched "
                          "to the training figures' intensities by scripts/match_hu_window.py)",
            "image_mapping": "8-bit display images divided by 255 (grey; RGB by ITU-R 601 luma)",
            "crop": f"CT slices cropped to the 3D lung mask's in-plane box plus {CROP_MARGIN:.0%} margin",
            "resize": "anti-aliased bilinear to the square input size (aspect not kept)",
            "hflip_tta": hflip_tta,
        },
        "calibration": {"method": "temperature scaling", "temperature": temperature, "fitted_on": data["val"]},
        "operating_point": {"slice_threshold": threshold, "chosen_by": "Youden J on the validation split",
                            "placement": "midway between neighbouring validation scores (metrics.between_scores)"},
        "study_rule": {"rule": "fraction_of_positive_slices", "min_fraction": STUDY_MIN_FRACTION,
                       "source": "seed 002 (Chen et al.): 5 % proportion threshold, chosen there for sensitivity; "
                                 "no COVID-19 CT volumes are available here to tune it"},
        "training": {**data, "method": method, "method_description": DESCRIPTIONS[method],
                     "initialisation": ("ImageNet" if result.config["pretrained"] else "random")
                                       + (", then MoCo pre-training" if method == "selftrans" else ""),
                     "config": result.config, "best_epoch": result.best_epoch, "command": command,
                     "history": [{k: h[k] for k in ("epoch", "train_loss", "seconds")} | {"val_auc": h["val"]["auc"]}
                                 for h in result.history]},
        "validation": {"split": data["val"], "calibrated": True, "at_0.5": at_half, "at_operating_point": at_op,
                       "auc_95ci": list(auc_ci),
                       "auc_95ci_method": "percentile bootstrap, 2000 resamples of "
                                          + ("patients" if val_patients else "images")},
        "baseline": {"description": "plain ImageNet EfficientNet-Lite0 fine-tune (AdamW 3e-4, 25 epochs, CPU)",
                     "val": PLAIN_BASELINE_VAL,
                     "delta_auc": at_half["auc"] - PLAIN_BASELINE_VAL["auc"],
                     "delta_f1_at_0.5": at_half["f1"] - PLAIN_BASELINE_VAL["f1"]},
        "intended_use": "Research use only. Screening aid for axial chest CT; not for clinical diagnosis.",
    }
    return save_package(out, result.state_dict, card)
