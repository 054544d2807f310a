"""Results of the HU slice model (issue 11) from the runs of scripts/train_hu_model.py: leave-patients-out (LOPO)
figures on the HU patients against the shipped model, COVID-CT val figures, and the decision whether to ship.

Writes docs/DOC.md (default hu_model), docs/DOC_p002.png and RUNS/results.json. Every interval is a 95 % percentile bootstrap (2000
resamples). Within one volume, neighbouring 2 mm slices are not independent, so slices are resampled in blocks of
BLOCK consecutive lung slices (2 cm); pooled figures resample blocks within each patient's blocks.
The decision rule was fixed before the runs: ship the final model only if (1) on the held-out P002 fold its
per-slice AUC beats the shipped model's, (2) the pooled LOPO AUC over all held-out HU slices beats the shipped
model's with the paired bootstrap interval of the difference above 0, and (3) no model of the recipe (fold models,
final model) has a COVID-CT val AUC below the shipped model's 0.858.
Run: python scripts/hu_model_results.py --runs runs/hu-model [--doc hu_model] [--ship Resources/Models/NAME]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from CovidCTScreenLib.evaluation.metrics import bootstrap_cis, roc_auc
from CovidCTScreenLib.models.model_package import load_package
from CovidCTTrainingLib.hu_runs import SHIPPED, hu_studies

REPO = Path(__file__).resolve().parents[1]

BLOCK = 10
STUDY_MIN_FRACTION = 0.05


def ci_text(value: float, ci) -> str:
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"


def blocks(studies: list[dict]) -> np.ndarray:
    """Bootstrap group of every slice: its patient and its block of BLOCK consecutive lung slices."""
    return np.concatenate([[f"{s['patient']}:{i // BLOCK}" for i in range(len(s["images"]))] for s in studies])


def auc_with_ci(y, a, b=None, groups=None) -> dict:
    """AUC of scores ``a`` (and ``b`` and the paired difference a - b) with bootstrap intervals."""
    y, a = np.asarray(y), np.asarray(a)

    def stat(idx):
        out = {"a": roc_auc(y[idx], a[idx])}
        if b is not None:
            out["b"] = roc_auc(y[idx], np.asarray(b)[idx])
            out["diff"] = out["a"] - out["b"]
        return out

    point, cis = stat(np.arange(len(y))), bootstrap_cis(stat, len(y), groups)
    return {k: {"value": point[k], "ci": cis[k]} for k in point}


def fraction_with_ci(scores, threshold, groups) -> dict:
    pos = np.asarray(scores) >= threshold
    ci = bootstrap_cis(lambda idx: {"f": pos[idx].mean()}, len(pos), groups)["f"]
    return {"value": float(pos.mean()), "ci": ci, "positive": int(pos.sum()), "n": int(len(pos))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "hu-model")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--ship", type=Path, default=None, help="copy the final model here when the decision rule holds")
    ap.add_argument("--doc", default="hu_model", help="name of the docs/ page (and its P002 picture) to write")
    args = ap.parse_args()

    scores = json.loads((args.runs / "scores.json").read_text())
    studies = {s["patient"]: s for s in hu_studies(args.runs)}
    shipped = load_package(SHIPPED)
    ship_t = shipped.card["operating_point"]["slice_threshold"]
    out = {"block_slices": BLOCK, "folds": {}, "covid_ct_val": {}}

    # per fold: the held-out patients scored by the fold model (LOPO) and by the shipped model
    pooled = {"y": [], "lopo": [], "shipped": [], "studies": []}
    for fold, held_out in scores["lopo"].items():
        patients = list(held_out)
        card = json.loads((args.runs / f"lopo-{fold}" / "package" / "model.json").read_text())
        t = card["operating_point"]["slice_threshold"]
        out["covid_ct_val"][f"lopo-{fold}"] = {"value": card["validation"]["at_0.5"]["auc"],
                                               "ci": card["validation"]["auc_95ci"]}
        rows = {"_training_hu": card["training"].get("hu_studies", [])}
        for p in patients:
            s, lopo, base = studies[p], np.array(scores["lopo"][fold][p]), np.array(scores["shipped"][p])
            g = blocks([s])
            row = {"label": s["study_label"], "lung_slices": len(lopo), "positive_targets": int(s["target"].sum()),
                   "lopo_threshold": t, "lopo_positive": fraction_with_ci(lopo, t, g),
                   "shipped_positive": fraction_with_ci(base, ship_t, g),
                   "lopo_mean_p": float(lopo.mean()), "shipped_mean_p": float(base.mean())}
            row["lopo_study_covid"] = row["lopo_positive"]["value"] > STUDY_MIN_FRACTION
            row["shipped_study_covid"] = row["shipped_positive"]["value"] > STUDY_MIN_FRACTION
            if 0 < s["target"].sum() < len(s["target"]):
                row["slice_auc"] = auc_with_ci(s["target"], lopo, base, g)
            rows[p] = row
            pooled["y"].append(s["target"])
            pooled["lopo"].append(lopo)
            pooled["shipped"].append(base)
            pooled["studies"].append(s)
        out["folds"][fold] = rows
    y = np.concatenate(pooled["y"])
    out["pooled_auc"] = auc_with_ci(y, np.concatenate(pooled["lopo"]), np.concatenate(pooled["shipped"]),
                                    blocks(pooled["studies"]))
    out["pooled_n"] = {"slices": int(len(y)), "positive": int(y.sum()), "patients": len(pooled["studies"])}
    out["covid_ct_val"]["shipped"] = {"value": shipped.card["validation"]["at_0.5"]["auc"],
                                      "ci": shipped.card["validation"]["auc_95ci"]}
    final = args.runs / "final" / "package"
    if (final / "model.json").is_file():
        fc = json.loads((final / "model.json").read_text())
        out["covid_ct_val"]["final"] = {"value": fc["validation"]["at_0.5"]["auc"], "ci": fc["validation"]["auc_95ci"]}
    new = final if (final / "model.json").is_file() else args.runs / "lopo-P002" / "package"
    out["ccccii_cp"] = {"new_model": new.parent.name, **ccccii(args.data, new, shipped)}

    p002 = out["folds"].get("P002", {}).get("P002", {}).get("slice_auc")
    rule = {"p002_auc_beats_shipped": bool(p002 and p002["diff"]["value"] > 0),
            "pooled_auc_beats_shipped": out["pooled_auc"]["diff"]["ci"][0] > 0,
            "covid_ct_val_not_below_shipped": all(v["value"] >= out["covid_ct_val"]["shipped"]["value"]
                                                  for k, v in out["covid_ct_val"].items() if k != "shipped"),
            "final_model_trained": "final" in out["covid_ct_val"]}
    out["decision"] = {**rule, "ship": all(rule.values())}
    if "P002" in scores["lopo"].get("P002", {}):
        plot_p002(studies["P002"], scores["lopo"]["P002"]["P002"], scores["shipped"]["P002"],
                  out["folds"]["P002"]["P002"]["lopo_threshold"], ship_t, REPO / "docs" / f"{args.doc}_p002.png")
    (args.runs / "results.json").write_text(json.dumps(out, indent=1))
    out["method"] = json.loads((args.runs / "lopo-P002" / "package" / "model.json").read_text())["training"]["method"]
    out["doc"] = args.doc
    (REPO / "docs" / f"{args.doc}.md").write_text(render(out))
    print(render(out))
    if args.ship and out["decision"]["ship"]:
        ship(final, args.ship, out)


def plot_p002(study: dict, new, old, t_new: float, t_old: float, path: Path) -> None:
    """Per-slice P(COVID-19) of held-out P002 (new fold model and shipped model) against the radiologists' labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = study["slice_index"]
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=110)
    ax.fill_between(k, 0, 1, where=study["target"] == 1, step="mid", color="tab:red", alpha=0.15,
                    label="radiologists: infected slice")
    ax.plot(k, new, color="tab:blue", label=f"new recipe, P002 held out (threshold {t_new:.2f})")
    ax.plot(k, old, color="tab:gray", label=f"shipped {SHIPPED} (threshold {t_old:.2f})")
    ax.axhline(t_new, color="tab:blue", ls=":", lw=0.8)
    ax.axhline(t_old, color="tab:gray", ls=":", lw=0.8)
    ax.set(xlabel="axial slice index k (inferior -> superior, load_ct order)", ylabel="P(COVID-19)", ylim=(0, 1),
           title="COVID-CT-MD P002 (held out): per-slice scores against the slice labels")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ccccii(data: Path, final: Path, shipped) -> dict:
    """Fraction of the 78 CC-CCII common-pneumonia slices (one patient, 8-bit) called COVID-19 by each model."""
    import torch

    from CovidCTScreenLib.input.datasets import Item, load_images
    from CovidCTScreenLib.models.inference import calibrated_probabilities

    files = sorted((data / "ccccii-cp").rglob("*.png"))
    x = load_images([Item(f, 0, "ccccii-cp-0") for f in files])
    res = {}
    for name, pkg in (("new", load_package(final)), ("shipped", shipped)):
        p = calibrated_probabilities(pkg, pkg.build(), x, torch.device("cpu"))[:, pkg.positive_index]
        res[name] = {"positive": int((p >= pkg.card["operating_point"]["slice_threshold"]).sum()), "n": len(p)}
    return res


def ship(final: Path, dest: Path, results: dict) -> None:
    """Copy the final package to ``dest`` with the LOPO figures in its card (the weights are unchanged)."""
    from CovidCTScreenLib.models.model_package import save_package
    from safetensors.torch import load_file

    card = json.loads((final / "model.json").read_text())
    card["name"] = dest.name
    card["hu_validation"] = {"method": "HU patients left out (two folds, scripts/train_hu_model.py)",
                             "folds": results["folds"], "pooled_auc": results["pooled_auc"],
                             "pooled_n": results["pooled_n"], "covid_ct_val": results["covid_ct_val"],
                             "command": "python scripts/train_hu_model.py && python scripts/hu_model_results.py "
                                        f"--ship {dest.relative_to(REPO) if dest.is_absolute() else dest}"}
    pkg = save_package(dest, load_file(str(final / "weights.safetensors")), card)
    shutil.copy(REPO / "docs" / f"{results['doc']}.md", dest / "HU_VALIDATION.md")
    print(f"shipped {pkg.path}")


def render(r: dict) -> str:
    folds = list(r["folds"])
    only = "" if len(folds) > 1 else f" --fold {folds[0]}"
    which = ("Two folds: P002 (the one COVID-19 volume with slice labels) held out, then every other HU patient held "
             "out at once." if len(folds) > 1 else f"Only fold {folds[0]} was run (the other fold and the final model were "
             "not trained: see the decision), so the pooled figure covers that fold's patients alone.")
    lines = ["# HU slice model: validation with patients left out, on real CT in Hounsfield units", "",
             f"Training method: {r['method']}. Produced by `OMP_NUM_THREADS=1 python scripts/train_hu_model.py "
             f"--skip-final --method {r['method']}{only} --runs RUNS` (training, 5-60 min per fold on the shared "
             f"2-core CPU) and `python scripts/hu_model_results.py --runs RUNS --doc {r['doc']}` (this page). {which} "
             "Each fold trains the recipe without its held-out patients, then scores them; the "
             f"shipped model ({SHIPPED}) scores the same slices. 95 % intervals: bootstrap over blocks of "
             f"{r['block_slices']} consecutive lung slices (2 cm), 2000 resamples, within each patient: they show "
             "slice sampling, not the spread between patients (one labelled COVID-19 volume).", "",
             "| fold | patient | study label | lung slices (COVID+ targets) | slice AUC new (CI) "
             "| slice AUC shipped (CI) | difference (CI) | slices called COVID new | shipped | study COVID new / shipped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "no"}
    for fold, rows in r["folds"].items():
        for p, row in rows.items():
            if p.startswith("_"):
                continue
            a = row.get("slice_auc")
            aucs = ("-",) * 3
            if a:
                aucs = (ci_text(a["a"]["value"], a["a"]["ci"]), ci_text(a["b"]["value"], a["b"]["ci"]),
                        f"{a['diff']['value']:+.3f} ({a['diff']['ci'][0]:+.3f}-{a['diff']['ci'][1]:+.3f})")
            lp, sp = row["lopo_positive"], row["shipped_positive"]
            lines.append(f"| {fold} | {p} | {row['label']} | {row['lung_slices']} ({row['positive_targets']}) | "
                         f"{aucs[0]} | {aucs[1]} | {aucs[2]} | {lp['positive']}/{lp['n']} ({lp['ci'][0]:.2f}-"
                         f"{lp['ci'][1]:.2f}) | {sp['positive']}/{sp['n']} | "
                         f"{yes[row['lopo_study_covid']]} / {yes[row['shipped_study_covid']]} |")
    lines += ["", "HU patients each fold model was trained on (besides COVID-CT train and Inf-Net's 50 labelled "
                  "slices):"]
    lines += [f"- fold {fold}: " + "; ".join(rows["_training_hu"]) for fold, rows in r["folds"].items()]
    if any("P002" in rows for rows in r["folds"].values()):
        lines += ["", f"![P002 per-slice scores]({r['doc']}_p002.png)",
                  f"`docs/{r['doc']}_p002.png`: per-slice P(COVID-19) of the held-out P002 volume, new fold model and "
                  "shipped model, against the radiologists' infected slices (red)."]
    pa, n = r["pooled_auc"], r["pooled_n"]
    lines += ["", f"Pooled over all held-out HU slices ({n['slices']} slices of {n['patients']} patients, "
              f"{n['positive']} COVID-19-positive targets): AUC new {ci_text(pa['a']['value'], pa['a']['ci'])}, "
              f"shipped {ci_text(pa['b']['value'], pa['b']['ci'])}, difference {pa['diff']['value']:+.3f} "
              f"({pa['diff']['ci'][0]:+.3f}-{pa['diff']['ci'][1]:+.3f}).", "",
              "Slices called COVID at each model's own operating point (new: the fold model's, Youden on COVID-CT val; "
              "shipped: its card's); study COVID when more than 5 % of lung slices are called.", "",
              "## COVID-CT official val split (118 images, 56 patients; patient bootstrap)", "",
              "| model | val AUC (CI) |", "|---|---|"]
    lines += [f"| {k} | {ci_text(v['value'], v['ci'])} |" for k, v in r["covid_ct_val"].items()]
    if "ccccii_cp" in r:
        c = r["ccccii_cp"]
        lines += ["", f"CC-CCII common pneumonia (78 slices of one patient, 8-bit, never trained on): slices called "
                      f"COVID-19: {c['new_model']} {c['new']['positive']}/{c['new']['n']}, shipped "
                      f"{c['shipped']['positive']}/{c['shipped']['n']}."]
    d = r["decision"]
    lines += ["", "## Decision (rule fixed before the runs; see the script's docstring)", "",
              f"- held-out P002 slice AUC above the shipped model's: {d['p002_auc_beats_shipped']}",
              f"- pooled held-out HU AUC above the shipped model's (paired interval above 0): "
              f"{d['pooled_auc_beats_shipped']}",
              f"- COVID-CT val AUC of every model of the recipe not below the shipped model's: "
              f"{d['covid_ct_val_not_below_shipped']}",
              f"- final model (all HU patients) trained: {d['final_model_trained']}",
              f"- **ship: {d['ship']}**", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
