"""The heatmap points at the evidence (scripts/gradcam_faithfulness.py on a subset of real labelled images).
Both checks fail for the inverted map the product showed before the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import gradcam_faithfulness as gf  # noqa: E402

from CovidCTScreenLib.models.model_package import load_package  # noqa: E402


@pytest.fixture(scope="module")
def model():
    package = load_package()
    return package, package.build("cpu")


def test_deleting_the_hottest_region_lowers_p_covid_more_than_random(model):
    d = gf.deletion(*model, gf.covid_val_images(20), n_random=4)
    assert (d["top"] - d["random"]).mean() > 0
    assert (d["inverted"] - d["random"]).mean() < 0  # the former map pointed away from the evidence


def test_heat_lies_on_labelled_lesions_more_than_their_area_share(model):
    images, lesions = gf.infnet_slices()
    pg = gf.pointing(*model, images, lesions)
    assert pg["share"].mean() > pg["chance"].mean()
    assert pg["share"].mean() > pg["share_inverted"].mean()
