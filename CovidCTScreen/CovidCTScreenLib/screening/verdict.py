"""Study verdicts: the binary slice model's proportion rule (seed 002) and the three-class category
(COVID-19 / other pneumonia / normal) that combines it with the lesion extent and distribution (``study_category``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..lesions.manifestations import METHOD_NAMES

TOP_K = 5
MIN_CONFIDENT_SLICES = 10
POSITIVE = "COVID-19"
NEGATIVE = "no COVID-19 pattern"


@dataclass
class Verdict:
    label: str
    positive: bool
    positive_fraction: float
    positive_slices: int
    lung_slices: int
    slice_threshold: float
    min_fraction: float
    max_probability: float
    top_slices: list  # [{"slice": k, "probability": p}], most suspicious first
    rule: str
    fraction_95ci: list  # bootstrap over lung slices of the positive fraction
    low_confidence: bool  # the decision could flip: read this study with particular care
    confidence_note: str
    # three-class category from the lesion evidence and this rule (``study_category``); None without lesions
    category: str | None = None
    pattern: str | None = None
    evidence: list = field(default_factory=list)
    reason: str = "lesion measurement was switched off: no three-class category"
    category_rules: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def study_verdict(slice_indices: np.ndarray, probability: np.ndarray, slice_threshold: float,
                  min_fraction: float, top_k: int = TOP_K) -> Verdict:
    """Positive when more than ``min_fraction`` of the lung slices reach ``slice_threshold``."""
    probability = np.asarray(probability, dtype=np.float64)
    positive = probability >= slice_threshold
    fraction = float(positive.mean()) if probability.size else 0.0
    order = np.argsort(-probability, kind="stable")[:top_k]
    is_positive = fraction > min_fraction
    lo, hi = _fraction_interval(positive)
    reasons = []
    if lo <= min_fraction < hi:
        reasons.append(f"the 95 % interval of the positive-slice fraction ({lo:.0%}-{hi:.0%}, bootstrap over "
                       f"slices) contains the rule's {min_fraction:.0%}")
    if probability.size < MIN_CONFIDENT_SLICES:
        reasons.append(f"only {probability.size} lung slices were scored")
    return Verdict(
        label=POSITIVE if is_positive else NEGATIVE,
        positive=bool(is_positive),
        positive_fraction=fraction,
        positive_slices=int(positive.sum()),
        lung_slices=int(probability.size),
        slice_threshold=float(slice_threshold),
        min_fraction=float(min_fraction),
        max_probability=float(probability.max(initial=0.0)),
        top_slices=[{"slice": int(slice_indices[i]), "probability": float(probability[i])} for i in order],
        rule=(f"COVID-19 when more than {min_fraction:.0%} of lung slices have a calibrated COVID-19 "
              f"probability >= {slice_threshold:.3f} (seed 002 proportion rule)"),
        fraction_95ci=[lo, hi],
        low_confidence=bool(reasons),
        confidence_note=("Low confidence: " + "; ".join(reasons) + ". Read with particular care." if reasons else
                         "The decision holds across slice resamples (bootstrap); this says nothing about the "
                         "model's validity on this scanner."),
    )


def _fraction_interval(positive: np.ndarray, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the positive fraction, resampling lung slices (neighbouring slices
    are correlated, so the interval is if anything too narrow)."""
    if positive.size == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = positive[rng.integers(0, positive.size, (n, positive.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------------- three classes

CATEGORIES = ("COVID-19", "other pneumonia", "normal")
PNEUMONIA = "COVID-19 or other pneumonia"
CATEGORY_RULES = (
    "No calibrated three-class probability exists here: the category follows these rules, in order, from the "
    "lesion extent and distribution of the lead lesion map and the binary slice model. "
    "1 normal: GGO <= 2 % and consolidation <= 0.5 % of the lung (issue 12's limits for normal CT volumes; "
    "RSNA 'negative for pneumonia', CO-RADS 1). "
    "2 other pneumonia: consolidation volume > GGO volume (RSNA 'atypical': lobar or segmental consolidation "
    "without GGO; CO-RADS 2). "
    "3 COVID-19: peripheral-predominant GGO; 'typical' when bilateral (RSNA 'typical', Simpson et al., Radiol "
    "Cardiothorac Imaging 2020; CO-RADS 5, Prokop et al., Radiology 2020: multifocal bilateral GGO close to the "
    "pleura), 'high suspicion' when strictly unilateral (CO-RADS 4: findings as in CO-RADS 5 but located strictly "
    "unilaterally). "
    "4 otherwise the pattern is indeterminate (RSNA 'indeterminate', CO-RADS 3: central, perihilar or diffuse "
    "GGO) and the binary slice model's study rule decides: positive COVID-19, negative other pneumonia. "
    "Lower-zone predominance is listed as support only (reported in COVID-19 by Chung et al. and Pan et al., "
    "Radiology 2020, but not required by RSNA / CO-RADS). Lobar / segmental shape, tree-in-bud, nodules, "
    "cavitation and effusion are not measured.")


def _item(finding: str, value, points_to: str) -> dict:
    return {"finding": finding, "value": value, "points_to": points_to}


def study_category(binary: dict, lead: dict, distribution: dict, lead_name: str,
                   second: dict | None = None, second_name: str | None = None) -> dict:
    """Category, RSNA-style pattern, evidence list and reason (``CATEGORY_RULES``).

    ``binary``: the slice model's ``Verdict.to_dict()``; ``lead`` / ``second``: whole-lung extents
    ({"ggo_pct", "consolidation_pct", "ggo_ml", "consolidation_ml"}) of the lead and the other lesion method;
    ``distribution``: ``distribution.distribution`` of the lead lesion map."""
    from ..lesions.distribution import NORMAL_LIMITS_PCT, involved

    ggo, cons = lead["ggo_pct"], lead["consolidation_pct"]
    abnormal = involved(ggo, cons)
    cons_dominant = lead["consolidation_ml"] > lead["ggo_ml"]
    bilateral, peripheral = distribution["bilateral"], distribution["peripheral_predominant"]
    lower = distribution["lower_zone_predominant"]
    sides = distribution["per_lung"]
    score = distribution["severity_score"]
    limits = f"normal <= {NORMAL_LIMITS_PCT['ggo']:g} % GGO, <= {NORMAL_LIMITS_PCT['consolidation']:g} % consolidation"
    slice_points = "COVID-19" if binary["positive"] else "normal or other pneumonia"
    evidence = [
        _item(f"GGO / consolidation extent ({lead_name})", f"{ggo:.1f} % / {cons:.1f} % of the lung ({limits})",
              PNEUMONIA if abnormal else "normal"),
        _item("dominant manifestation", "consolidation" if cons_dominant else "ground-glass opacity",
              "other pneumonia" if cons_dominant else "COVID-19"),
        _item("lungs involved", ("both" if bilateral else "one or none") + " (right %.1f %%, left %.1f %%)"
              % (sides["right"]["lesion_pct"], sides["left"]["lesion_pct"]),
              "COVID-19" if bilateral else "COVID-19 (CO-RADS 4) if peripheral, else indeterminate"),
        _item("peripheral predominance", ("yes" if peripheral else "no") + " (lesion %.1f %% of the peripheral lung, "
              "%.1f %% of the central)" % tuple(distribution["peripheral_vs_central_pct"]),
              "COVID-19" if peripheral else "indeterminate"),
        _item("lower-zone predominance (support only)", "yes" if lower else "no",
              "COVID-19" if lower else "indeterminate"),
        _item("CT severity score (zones, not lobes)", f"{score['total']} / {score['max']}",
              PNEUMONIA if score["total"] else "normal"),
        _item("slice model (binary study rule; its HU-CT check is in the model card)",
              f"{binary['positive_slices']} of {binary['lung_slices']} lung slices positive "
              f"({binary['positive_fraction']:.0%}; rule > {binary['min_fraction']:.0%}"
              + ("; low confidence" if binary.get("low_confidence") else "") + ")", slice_points),
    ]
    if not abnormal:  # a pattern of opacities within a normal lung's extent points nowhere
        for item in evidence[1:5]:
            item["value"], item["points_to"] = f"{item['value']} (extent within normal limits)", "normal"
    if second is not None:
        evidence.append(_item(f"GGO / consolidation extent ({second_name}, second method, not used in the rules)",
                              f"{second['ggo_pct']:.1f} % / {second['consolidation_pct']:.1f} % of the lung",
                              PNEUMONIA if involved(second["ggo_pct"], second["consolidation_pct"]) else "normal"))
    if not abnormal:
        category, pattern = "normal", "negative"
        reason = f"No lesion beyond a normal lung's extent ({lead_name}: GGO {ggo:.1f} %, consolidation {cons:.1f} %)"
        if binary["positive"]:
            reason += ", although the slice model's study rule is positive (no opacity to support it)"
    elif cons_dominant:
        category, pattern = "other pneumonia", "atypical"
        reason = f"Consolidation predominates over GGO ({cons:.1f} % vs {ggo:.1f} %), as in bacterial / lobar pneumonia"
    elif peripheral and bilateral:
        category, pattern = "COVID-19", "typical"
        reason = "Bilateral, peripheral-predominant GGO: the RSNA / CO-RADS typical COVID-19 pattern"
    elif peripheral:
        category, pattern = "COVID-19", "high suspicion"
        reason = ("Peripheral-predominant GGO in one lung only: CO-RADS 4 (typical findings, strictly unilateral), "
                  "a high suspicion of COVID-19")
    else:
        category, pattern = ("COVID-19" if binary["positive"] else "other pneumonia"), "indeterminate"
        shape = ("unilateral" if not bilateral else "bilateral") + (", not peripheral-predominant" if not peripheral
                                                                    else ", peripheral-predominant")
        reason = (f"Indeterminate pattern (GGO-predominant, {shape}); the slice model's study rule "
                  f"({'positive' if binary['positive'] else 'negative'}) decides")
        if not binary["positive"]:
            reason += ("; 'other pneumonia' here means opacities not called COVID-19: tumour, atelectasis, oedema "
                       "or fibrosis look the same to these rules")
    return {"category": category, "pattern": pattern, "evidence": evidence, "reason": reason + ".",
            "category_rules": CATEGORY_RULES}


def category_from_report(binary: dict, summary: dict, spread: dict) -> dict:
    """``study_category`` from a report's ``manifestations`` and ``distribution`` sections (light: the Slicer
    module recomputes the category this way when the user overrides the slice threshold)."""
    lead = summary["lead_method"]
    other = "hu_bands" if lead == "learned" else "learned"
    second = summary.get(other, {}).get("per_lung", {}).get("both")  # absent when that method did not run
    return study_category(binary, summary[lead]["per_lung"]["both"], spread, METHOD_NAMES[lead], second, METHOD_NAMES[other])
