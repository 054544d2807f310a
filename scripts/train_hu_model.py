"""The HU slice model of issue 11: render the HU training data, validate the recipe with patients left out (two folds:
P002 alone, then every other HU patient at once), train the final model on all of it (unless --skip-final), and
score the held-out slices (runs/hu-model/scores.json; the table: scripts/hu_model_results.py).

HU data (real scanner CT in Hounsfield units): covid-ct-md P002 (COVID-19, radiologists' slice labels), cap002 (CAP:
its slices are not COVID-19), normal002; chest-ct's two lung-cancer volumes (not COVID-19); covid-hu-slices' single
COVID-19 slices whose lungs show findings in the data README's visual description (A002304, A046441, A072894,
A098752; A048383 "largely clear" and A067967 "mostly liver" are left out). 8-bit extra data: COVID-CT's official
train split and Inf-Net's 50 labelled slices (every one has an infection mask: COVID-19 positive), both under the
intensity augmentation. No epoch selection (the last epoch of a fixed recipe is kept); COVID-CT val calibrates and
sets the operating point; the held-out patients of a fold are scored only after its model is trained. No test split
and no kept-back patient is read.

Every stage is resumable (finished folds are skipped; a killed training resumes from its checkpoint):
OMP_NUM_THREADS=1 python scripts/train_hu_model.py --data ../shared/data --runs runs/hu-model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from CovidCTTrainingLib.hu_runs import SHIPPED, SINGLE_SLICES, VOLUME_SLICES, hu_studies

REPO = Path(__file__).resolve().parents[1]
COVID_HU_WITH_FINDINGS = ("A002304", "A046441", "A072894", "A098752")
RECIPE = ["--init-model", SHIPPED, "--freeze-blocks", "6", "--intensity-augment", "--select", "last",
          "--epochs", "6", "--lr", "2e-4", "--batch-size", "16", "--hflip-tta", "--seed", "0"]
# Two folds fit the 2-core CPU budget: the COVID-19 volume alone, then every other HU patient at once (a harder
# test than one at a time: that fold trains with no HU negatives and no HU single slices at all).
FOLDS = {"P002": ["P002"], "non-P002": None}  # None: every rendered HU patient but P002


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(data: Path, runs: Path) -> list[str]:
    """Write the study / image lists, render the single COVID-19 HU slices; returns the data arguments."""
    from CovidCTScreenLib.input.datasets import segmentation_pairs, read_lesion_mask

    runs.mkdir(parents=True, exist_ok=True)
    chest = runs / "chest_ct_studies.csv"
    chest.write_text("study,label,patient_id\n"
                     f"{(data / 'chest-ct/Lung_Dx-A0001_5mm_B.nii.gz').resolve()},non-COVID-19,Lung_Dx-A0001\n"
                     f"{(data / 'chest-ct/Lung_Dx-A0002_B40f').resolve()},non-COVID-19,Lung_Dx-A0002\n")
    infnet = runs / "infnet_labelled.csv"
    rows = [f"{img.resolve()},{'COVID' if read_lesion_mask(mask).any() else 'NonCOVID'},medseg-slice-{img.stem}"
            for img, mask in segmentation_pairs(data / "infnet-semiseg" / "labelled")]
    infnet.write_text("path,label,patient_id\n" + "\n".join(rows) + "\n")
    single = runs / SINGLE_SLICES
    render_single_slices(data / "covid-hu-slices", single)
    return ["--covid-ct", str(data / "covid-ct"), "--images", str(infnet), "--volumes", str(data / "covid-ct-md"),
            "--volumes", str(chest), "--slice-cache", str(runs / VOLUME_SLICES), "--rendered", str(single)]


def render_single_slices(folder: Path, out: Path) -> None:
    """covid-hu-slices with findings, rendered as the pipeline renders a slice (lung mask, lung box, window)."""
    from CovidCTScreenLib.errors import InputError
    from CovidCTScreenLib.models.inference import lung_slices
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import read_dicom_slice

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.glob("*.dcm")):
        subject = f.name.split("_")[0]
        target = out / f"{subject}.npz"
        if subject not in COVID_HU_WITH_FINDINGS or target.is_file() or (out / f"{subject}.skipped").is_file():
            continue
        hu, spacing = read_dicom_slice(f)
        try:
            s = lung_slices(hu, lung_mask(hu, spacing).lungs, spacing)
        except InputError as e:
            (out / f"{subject}.skipped").write_text(str(e) + "\n")
            log(f"{subject}: not used ({e})")
            continue
        np.savez(target, images=s.images.astype(np.float16), slice_index=s.indices, slice_label=np.ones(1, np.int8),
                 target=np.ones(1, np.int64), study_label="COVID-19", patient=subject, source=str(f),
                 slices_in_volume=1)


def train(name: str, data_args: list[str], runs: Path, hold_out: list[str], method: str = "supervised") -> Path:
    """One covidct-train run of the recipe (skipped when its package exists); returns the package folder. With
    ``method`` "consistency" (seed 000) or "selftrans" (seed 003: MoCo on them, then on the training images without
    labels, then the recipe's fine-tuning) the lung slices of the training patients' HU volumes are also its
    unlabelled data (never a held-out patient's)."""
    work = runs / name
    package = work / "package"
    if (package / "model.json").is_file():
        return package
    args = [*data_args, *RECIPE, "--work", str(work / "train"), "--package", str(package), "--name", name]
    if method != "supervised":
        from CovidCTScreenLib.input.volume_datasets import read_studies

        args += ["--method", method]
        sources = [data_args[i + 1] for i, a in enumerate(data_args) if a == "--volumes"]
        args += [a for src in sources for study in read_studies(src) if study.patient not in hold_out
                 for a in ("--unlabelled-volume", str(study.path))]
    for p in hold_out:
        args += ["--hold-out", p]
    log(f"training {name} (held out: {', '.join(hold_out) or 'none'}); load {os.getloadavg()[0]:.1f}")
    work.mkdir(parents=True, exist_ok=True)
    with open(work / "train.log", "a") as f:
        rc = subprocess.run([sys.executable, "-m", "CovidCTTrainingLib.cli", *args], stdout=f, stderr=f).returncode
    if rc:
        raise SystemExit(f"training {name} failed (exit {rc}); see {work / 'train.log'}")
    return package


def score(package, studies: list[dict]) -> dict[str, list[float]]:
    """Calibrated P(COVID-19) of each rendered study's slices, as screening computes it."""
    import torch

    from CovidCTScreenLib.models.inference import calibrated_probabilities
    from CovidCTScreenLib.models.model_package import load_package

    torch.set_num_threads(1)
    pkg = load_package(package)
    net = pkg.build("cpu")
    return {s["patient"]: calibrated_probabilities(pkg, net, s["images"], torch.device("cpu"))[:, pkg.positive_index]
            .tolist() for s in studies}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "hu-model")
    ap.add_argument("--skip-final", action="store_true", help="only the folds with patients left out")
    ap.add_argument("--method", choices=("supervised", "consistency", "selftrans"), default="supervised",
                    help="consistency: seed 000's consistency loss; selftrans: seed 003's MoCo pre-training first; "
                         "both with the training patients' HU lung slices as unlabelled data")
    ap.add_argument("--fold", choices=tuple(FOLDS), action="append",
                    help="run only this fold (repeatable; default: every fold)")
    args = ap.parse_args()

    data_args = prepare(args.data, args.runs)
    results_path = args.runs / "scores.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for fold, patients in FOLDS.items():
        if args.fold and fold not in args.fold:
            continue
        patients = patients or [s["patient"] for s in hu_studies(args.runs) if s["patient"] != "P002"]
        package = train(f"lopo-{fold}", data_args, args.runs, patients, args.method)
        studies = hu_studies(args.runs)
        if "shipped" not in results:
            results["shipped"] = score(SHIPPED, studies)
        if fold not in results.get("lopo", {}):
            results.setdefault("lopo", {})[fold] = score(package, [s for s in studies if s["patient"] in patients])
            results.setdefault("threshold", {})[fold] = json.loads((package / "model.json").read_text())[
                "operating_point"]["slice_threshold"]
        results_path.write_text(json.dumps(results))
        log(f"fold {fold} scored")
    if not args.skip_final:
        train("final", data_args, args.runs, [], args.method)
        log("final model trained")


if __name__ == "__main__":
    main()
