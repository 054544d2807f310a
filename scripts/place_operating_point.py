"""Move a classifier package's slice threshold off the validation scores (``metrics.between_scores``).

Re-scores the card's validation list with covidct-evaluate's engine, places the threshold midway between
the two validation scores around it (so every val decision stays as the card records it) and rewrites
``model.json`` (weights and their sha256 unchanged) and ``MODEL_CARD.md``. Refuses when the recorded
confusion matrix does not come back. Run:

    python scripts/covid_ct_list.py ../shared/data/covid-ct val --out runs/val.csv
    python scripts/place_operating_point.py Resources/Models/covidct-effnetlite0-v1 runs/val.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from CovidCTScreenLib.evaluation.evaluate import evaluate
from CovidCTScreenLib.evaluation.metrics import between_scores, binary_metrics
from CovidCTScreenLib.models.model_package import CARD_NAME, load_package
from model_card import render

COUNTS = ("tp", "fp", "tn", "fn")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", type=Path)
    p.add_argument("val_csv", type=Path)
    args = p.parse_args()
    package = load_package(args.package)
    card = package.card
    result = evaluate(args.val_csv, model=package, device="cpu", resamples=10)
    truth, score = result.curves["truth"], result.curves["score"]
    recorded = card["validation"]["at_operating_point"]
    old = float(card["operating_point"]["slice_threshold"])
    # the recorded matrix decides on which side of the old threshold a score lying on it belongs
    candidates = [between_scores(score, t) for t in (old, np.nextafter(old, 0) - 1e-7)]
    new = next((t for t in candidates if all(binary_metrics(truth, score, t)[k] == recorded[k] for k in COUNTS)),
               None)
    if new is None:
        raise SystemExit(f"the recorded confusion matrix {[recorded[k] for k in COUNTS]} does not come back")
    card["operating_point"]["slice_threshold"] = new
    card["operating_point"]["placement"] = "midway between neighbouring validation scores (metrics.between_scores)"
    recorded["threshold"] = new
    (args.package / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    (args.package / "MODEL_CARD.md").write_text(render(card))
    gap = float(np.abs(score - new).min())
    print(f"slice threshold {old!r} -> {new!r}; nearest val score {gap:.2e} away; matrix "
          f"{ {k: recorded[k] for k in COUNTS} } kept")


if __name__ == "__main__":
    main()
