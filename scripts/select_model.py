"""Pick the shipped model among finished training runs, on the COVID-CT val split only, and export it.

Candidates (fixed before looking at the results): each run's best epoch, and the uniform weight average
("model soup", Wortsman et al. 2022) of all runs' best epochs, which share the ImageNet start; each with
and without left-right mirror test-time augmentation. The candidate with the highest val AUC is exported
(calibrated and thresholded on val like any other export). Run:
python scripts/select_model.py --covid-ct ../shared/data/covid-ct --runs runs/A runs/B --package OUT
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from CovidCTScreenLib.models.inference import predict_logits
from CovidCTScreenLib.evaluation.metrics import binary_metrics
from CovidCTScreenLib.models.networks import build_network
from CovidCTScreenLib.input.datasets import load_images
from CovidCTTrainingLib.data import COVID_CT_LABELS, covid_ct_split, covid_ct_summary
from CovidCTTrainingLib.export import export_package
from CovidCTTrainingLib.trainer import TrainResult


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--covid-ct", type=Path, required=True)
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders with checkpoint.pt")
    ap.add_argument("--package", type=Path, required=True)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()

    train_items, val_items = covid_ct_split(args.covid_ct, "train"), covid_ct_split(args.covid_ct, "val")
    x_va = load_images(val_items)
    y_va = np.array([i.label for i in val_items])
    ckpts = [torch.load(r / "checkpoint.pt", map_location="cpu", weights_only=True) for r in args.runs]
    states = {f"{r.name} (epoch {c['best_epoch'] + 1})": c["best_state"] for r, c in zip(args.runs, ckpts)}
    if len(ckpts) > 1:
        soup = {k: sum(c["best_state"][k].float() for c in ckpts) / len(ckpts) for k in ckpts[0]["best_state"]}
        for k, v in ckpts[0]["best_state"].items():  # integer buffers (BN counters) are not averaged
            if not v.is_floating_point():
                soup[k] = v
        states["soup of " + ", ".join(r.name for r in args.runs)] = soup
    device = torch.device("cpu")
    rows = []
    for name, state in states.items():
        net = build_network(ckpts[0]["config"]["architecture"], len(COVID_CT_LABELS))
        net.load_state_dict(state)
        net.eval()
        for tta in (False, True):
            logits = predict_logits(net, x_va, device, hflip_tta=tta)
            p = torch.softmax(torch.from_numpy(logits), 1)[:, 1].numpy()
            m = binary_metrics(y_va, p, 0.5)
            rows.append((m["auc"], m["f1"], name, tta, state, logits))
            print(f"{name:<45} mirror TTA {'on ' if tta else 'off'}  val AUC {m['auc']:.4f}  F1@0.5 {m['f1']:.4f}")
    auc, f1, name, tta, state, logits = max(rows, key=lambda r: r[0])
    print(f"selected: {name}, mirror TTA {'on' if tta else 'off'} (val AUC {auc:.4f}, F1@0.5 {f1:.4f})")

    history = ckpts[0]["history"]
    result = TrainResult(state_dict=state, val_logits=logits, val_metrics={}, best_epoch=ckpts[0]["best_epoch"] + 1,
                         history=history, config=ckpts[0]["config"])
    data = {**covid_ct_summary(train_items, val_items),
            "selection": {"candidates": [{"model": r[2], "hflip_tta": r[3], "val_auc": r[0], "val_f1_at_0.5": r[1]}
                                         for r in rows],
                          "chosen": {"model": name, "hflip_tta": tta},
                          "runs": [{"run": r.name, "config": c["config"], "best_epoch": c["best_epoch"] + 1,
                                    "val_auc_by_epoch": [round(h["val"]["auc"], 4) for h in c["history"]]}
                                   for r, c in zip(args.runs, ckpts)],
                          "note": "chosen by val AUC among the candidates above, so val figures are optimistic"}}
    pkg = export_package(result, args.package, name=args.name or args.package.name, labels=COVID_CT_LABELS,
                         positive_label="COVID", val_labels=y_va, data=data, hflip_tta=tta,
                         val_patients=[i.patient for i in val_items],
                         command="python scripts/select_model.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    v = pkg.card["validation"]
    print(f"exported {pkg.path}: val AUC {v['at_0.5']['auc']:.4f}, F1@0.5 {v['at_0.5']['f1']:.4f}, "
          f"F1 at operating point {v['at_operating_point']['f1']:.4f}")


if __name__ == "__main__":
    main()
