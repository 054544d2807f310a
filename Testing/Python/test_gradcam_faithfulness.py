"""The heatmap points at the evidence (CovidCTScreenLib.evaluation.gradcam_faithfulness, as
scripts/gradcam_faithfulness.py runs it, on a subset of real labelled images). Both checks fail for the inverted
map the product showed before the fix."""

from __future__ import annotations

import pytest
from conftest import COVID_CT, DATA

from CovidCTScreenLib.evaluation.gradcam_faithfulness import covid_val_images, deletion, infnet_slices, pointing
from CovidCTScreenLib.models.model_package import load_package


@pytest.fixture(scope="module")
def model():
    package = load_package()
    return package, package.build("cpu")


def test_deleting_the_hottest_region_lowers_p_covid_more_than_random(model):
    d = deletion(*model, covid_val_images(COVID_CT, 20), n_random=4)
    assert (d["top"] - d["random"]).mean() > 0
    assert (d["inverted"] - d["random"]).mean() < 0  # the former map pointed away from the evidence


def test_heat_lies_on_labelled_lesions_more_than_their_area_share(model):
    images, lesions = infnet_slices(DATA / "infnet-semiseg" / "multiclass")
    pg = pointing(*model, images, lesions)
    assert pg["share"].mean() > pg["chance"].mean()
    assert pg["share"].mean() > pg["share_inverted"].mean()
