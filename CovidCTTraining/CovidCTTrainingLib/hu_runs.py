"""The HU slice model's recipe runs (issue 11: ``scripts/train_hu_model.py`` trains and scores,
``scripts/hu_model_results.py`` tabulates): the shipped model the recipe starts from and is compared with, and
where a runs folder keeps its rendered HU studies."""

from __future__ import annotations

from pathlib import Path

SHIPPED = "covidct-effnetlite0-v1"
VOLUME_SLICES = "hu-slices"  # lung slices of the HU volumes (``volumes.render_studies`` cache)
SINGLE_SLICES = "hu-single-slices"  # single COVID-19 HU slices rendered as the pipeline renders a slice


def hu_studies(runs: str | Path) -> list[dict]:
    """Every rendered HU study (volumes and single slices) of the runs folder (``data.rendered_slices``)."""
    from .data import rendered_slices

    runs = Path(runs)
    return rendered_slices([*sorted((runs / VOLUME_SLICES).glob("*.npz")),
                            *sorted((runs / SINGLE_SLICES).glob("*.npz"))])
