"""Train each seed paper's method on COVID-CT and compare them on the val split (never the test split).

Labelled: the official COVID-CT train split. Unlabelled (semi- and self-supervised methods only): Inf-Net's
unlabelled COVID slices and the lung slices of the chest-ct HU volumes (lung mask, lung window). Each experiment
is exported as a model package (calibrated and thresholded on val) under --out; its val accuracy and F1 (at 0.5),
AUC and the AUC's 95 % interval (bootstrap over val patients, metrics.bootstrap_ci) and the wall time go to a table
in --doc, rewritten after every experiment. Finished experiments are skipped when the command is run again, and
an interrupted one resumes from its checkpoint. The full budget on a GPU is the defaults:
python scripts/train_experiments.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from CovidCTScreenLib.models.model_package import load_package
from CovidCTTrainingLib.data import (COVID_CT_LABELS, covid_ct_split, covid_ct_summary, load_images,
                                     load_unlabelled_images)
from CovidCTTrainingLib.export import export_package
from CovidCTTrainingLib.trainer import make_config, train

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
# name -> (method, overrides, what it is). Each row uses the hyper-parameters its seed gives (methods.METHOD_DEFAULTS).
EXPERIMENTS = {
    "supervised": ("supervised", {"lr": 5e-5, "head_lr": 5e-4},
                   "ImageNet EfficientNet-Lite0, Adam(W) 5e-5 body / 5e-4 head (seed 002)"),
    "supervised-random": ("supervised", {"pretrained": False, "lr": 1e-4},
                          "the same network from random initialisation, Adam(W) 1e-4 (seed 003's 'Rand.')"),
    "supervised-000": ("supervised", {"lr": 1e-4, "weight_decay": 0.0, "batch_size": 12},
                       "seed 000's recipe without the unlabelled term (lambda = 0): ImageNet, 1e-4, batch 12"),
    "consistency": ("consistency", {}, "seed 000: ImageNet, 1e-4, batch 12 + 12 unlabelled, lambda 0.3"),
    "selftrans": ("selftrans", {}, "seed 003: ImageNet, MoCo on unlabelled, MoCo on train images, fine-tune 1e-4"),
    "ssresnet": ("ssresnet", {}, "seed 001: two-path SSResNet from scratch, Adam 1e-3, lambda 0.3"),
    "crnet": ("crnet", {}, "seed 003's CRNet from scratch, Adam 1e-4"),
}
SEMI = ("consistency", "ssresnet", "selftrans")
START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--covid-ct", type=Path, default=DATA / "covid-ct")
    ap.add_argument("--unlabelled", type=Path, default=DATA / "infnet-semiseg" / "unlabelled" / "images")
    ap.add_argument("--unlabelled-limit", type=int, default=None, help="Inf-Net images used (evenly spread)")
    ap.add_argument("--volumes", type=Path, nargs="*", default=[DATA / "chest-ct" / "Lung_Dx-A0002_B40f",
                                                                DATA / "chest-ct" / "Lung_Dx-A0001_5mm_B.nii.gz"])
    ap.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=50, help="training epochs (the seeds train 50)")
    ap.add_argument("--pretrain-epochs", type=int, default=10, help="MoCo epochs of each Self-Trans phase")
    ap.add_argument("--moco-batch-size", type=int, default=128)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "experiments")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "experiments.md")
    args = ap.parse_args()
    command = "python scripts/train_experiments.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    t0 = time.perf_counter()
    train_items, val_items = covid_ct_split(args.covid_ct, "train"), covid_ct_split(args.covid_ct, "val")
    x_tr, x_va = load_images(train_items, args.image_size), load_images(val_items, args.image_size)
    y_tr, y_va = np.array([i.label for i in train_items]), np.array([i.label for i in val_items])
    x_un = [load_unlabelled_images(args.unlabelled, args.image_size, args.unlabelled_limit)]
    folder = args.unlabelled.relative_to(DATA) if args.unlabelled.is_relative_to(DATA) else args.unlabelled
    sources = [f"{folder}: {len(x_un[0])} images (8-bit)"]
    if args.volumes:
        from CovidCTTrainingLib.volumes import volume_lung_slices  # needs SimpleITK

        slices, notes = volume_lung_slices(args.volumes, args.image_size)
        x_un.append(slices)
        sources += notes
    x_un = np.concatenate(x_un)
    print(f"data loaded in {time.perf_counter() - t0:.0f} s: {len(x_tr)} train, {len(x_va)} val, {len(x_un)} "
          f"unlabelled", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in args.experiments:
        method, overrides, _ = EXPERIMENTS[name]
        config = make_config(method, **overrides, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                             moco_batch_size=args.moco_batch_size, device=args.device, seed=args.seed)
        if name in results and results[name]["config"] == config.__dict__:
            continue
        t = time.perf_counter()
        result = train(x_tr, y_tr, x_va, y_va, config, args.out / name, unlabelled_images=x_un,
                       progress=lambda r, name=name: print(f"{name} {r.phase} {r.epoch}/{r.epochs} loss {r.train_loss:.4f} "
                                                f"{r.losses} val AUC {r.val.get('auc', float('nan')):.3f} "
                                                f"{r.seconds:.0f} s", flush=True))
        seconds = time.perf_counter() - t
        data = covid_ct_summary(train_items, val_items) | {"unlabelled": sources if method in SEMI else []}
        export_package(result, args.out / name / "package", name=f"experiment-{name}", labels=COVID_CT_LABELS,
                       positive_label="COVID", val_labels=y_va, data=data, command=command,
                       val_patients=[i.patient for i in val_items])
        card = load_package(args.out / name / "package").card
        v = card["validation"]
        results[name] = {"config": config.__dict__, "seconds": seconds, "best_epoch": result.best_epoch,
                         "accuracy": v["at_0.5"]["accuracy"], "f1": v["at_0.5"]["f1"], "auc": v["at_0.5"]["auc"],
                         "auc_95ci": v["auc_95ci"], "unlabelled": data["unlabelled"]}
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        write_doc(args, command, results, sources, len(x_tr), len(x_va), len(x_un))
        print(f"{name}: val AUC {v['at_0.5']['auc']:.3f} in {seconds:.0f} s", flush=True)
    write_doc(args, command, results, sources, len(x_tr), len(x_va), len(x_un))
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)


def write_doc(args, command: str, results: dict, sources: list, n_train: int, n_val: int, n_unlabelled: int) -> None:
    """Put the results table between the markers of --doc (the text around them is kept)."""
    rows = [("| experiment | method | setting | val accuracy | val F1 | val AUC (95 % CI, patient bootstrap) "
             "| best epoch | seconds |"), "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lo, hi = r["auc_95ci"]
        rows.append(f"| {name} | {r['config']['method']} | {EXPERIMENTS[name][2]} | {r['accuracy']:.3f} | "
                    f"{r['f1']:.3f} | {r['auc']:.3f} ({lo:.3f}-{hi:.3f}) | {r['best_epoch']} | {r['seconds']:.0f} |")
    block = "\n".join([
        START, "", f"Command: `{command}`", "",
        (f"Budget: image size {args.image_size} px, {args.epochs} training epochs, {args.pretrain_epochs} MoCo "
         f"epochs per Self-Trans phase (MoCo batch {args.moco_batch_size}), device {args.device} "
         f"({'CUDA' if torch.cuda.is_available() else 'CPU only'} on the machine that ran it)."), "",
        f"Data: COVID-CT official train split ({n_train} images) for training, val split ({n_val} images) for "
        f"selection, calibration and this table; {n_unlabelled} unlabelled slices for the semi- and self-supervised "
        "rows: " + "; ".join(sources) + ".", "", *rows, "", END])
    text = args.doc.read_text() if args.doc.is_file() else f"# Training methods compared\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(head + block + rest.split(END, 1)[1])


if __name__ == "__main__":
    main()
