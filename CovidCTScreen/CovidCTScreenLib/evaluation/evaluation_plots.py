"""The plots of an evaluation: ROC curve with the operating point, reliability diagram, confusion matrix,
and for segmentation a sheet of the worst and best cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import roc_curve


def _figure(width: float = 5.0, height: float = 4.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height), dpi=110)


def _fmt(metric: dict) -> str:
    value, (lo, hi) = metric["value"], metric["ci95"]
    return "n/a" if value is None or np.isnan(value) else f"{value:.3f} (95% CI {lo:.3f}-{hi:.3f})"


def roc_png(result, path: Path) -> None:
    truth, score = result.curves["truth"], result.curves["score"]
    plt, fig, ax = _figure()
    fpr, tpr, _ = roc_curve(truth, score)
    op = result.document["results"]["operating_point"]
    ax.plot(fpr, tpr, color="#1f4e79", lw=2, label=f"AUC {_fmt(op['auc'])}")
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=1, label="chance")
    for (name, section), marker in zip(result.document["results"].items(), "os^Dv"):
        t = result.document["thresholds"][name]
        spec, sens = section["specificity"]["value"], section["sensitivity"]["value"]
        ax.plot(1 - spec, sens, marker, ms=9, mfc="none", mew=2,
                label=f"{name.replace('_', ' ')} {t:.3f}: sens {sens:.2f}, spec {spec:.2f}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title=f"ROC: {result.curves.get('score_name', 'P(' + result.curves['positive_label'] + ')')}")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_png(result, path: Path) -> None:
    cal = result.document["calibration"]
    plt, fig, ax = _figure()
    edges = np.asarray(cal["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    freq = np.array([np.nan if v is None else v for v in cal["observed_frequency"]], float)
    ax.bar(centres, np.nan_to_num(freq), width=edges[1] - edges[0], color="#9ecae1", edgecolor="#1f4e79",
           label="observed frequency")
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="perfect calibration")
    for c, f, n in zip(centres, freq, cal["count"]):
        if n:
            ax.text(c, min(np.nan_to_num(f) + 0.02, 0.97), str(n), ha="center", fontsize=7)
    ax.set(xlabel=f"predicted {cal['probability']}", ylabel="observed fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability (ECE {cal['ece']:.3f}; numbers = items per bin)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def confusion_png(result, path: Path) -> None:
    cm = result.document["results"]["operating_point"]["confusion_matrix"]
    matrix, names = np.asarray(cm["matrix"]), cm["labels"]
    plt, fig, ax = _figure(4.6, 4.2)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=14,
                color="white" if n > matrix.max() / 2 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
           xlabel="prediction", ylabel="truth",
           title=f"At the operating point {result.document['thresholds']['operating_point']:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(result, folder: Path) -> dict[str, str]:
    """Write the plots that fit ``result.kind`` into ``folder``; return {plot: file name}."""
    if result.kind == "segmentation":
        from .evaluate_segmentation import cases_png

        cases_png(result, folder / "cases.png")
        return {"cases": "cases.png"}
    files = {"roc": "roc.png", "confusion": "confusion.png"}
    roc_png(result, folder / files["roc"])
    confusion_png(result, folder / files["confusion"])
    if result.kind == "slices":
        files["reliability"] = "reliability.png"
        reliability_png(result, folder / files["reliability"])
    if result.kind == "studies":
        from .evaluate_studies import slices_png

        for s in result.curves["screened"]:
            if (s["slice_labels"] >= 0).any():
                name = f"slices_{s['study'].patient}.png"
                files[f"slices_{s['study'].patient}"] = name
                slices_png(s, folder / name)
    return files
