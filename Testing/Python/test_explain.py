"""Grad-CAM sign, study scale and the fused classifier pass, on real COVID-CT val images with the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from CovidCTScreenLib.errors import Cancelled
from CovidCTScreenLib.models.explain import resize_map, to_volume
from CovidCTScreenLib.models.inference import calibrated_probabilities, predict_logits, probabilities_and_gradcam
from CovidCTScreenLib.models.model_package import load_package
from CovidCTScreenLib.models.networks import gradcam_layer
from CovidCTScreenLib.input.preprocess import prepare_image

from conftest import COVID_CT


@pytest.fixture(scope="module")
def covid_images():
    names = (COVID_CT / "splits" / "val_COVID.txt").read_text().split()[:6]
    return np.stack([prepare_image(Image.open(COVID_CT / "CT_COVID" / n).convert("L")) for n in names])


@pytest.fixture(scope="module")
def package():
    return load_package()


def test_gradcam_is_the_raw_cam_of_an_independent_computation(package, covid_images):
    """Our maps equal MONAI's Grad-CAM with no post-processing (the raw ReLU'd CAM); MONAI's default
    normaliser, which the product used before, is its mirror image (correlation -1)."""
    import torch
    from monai.visualize import GradCAM

    _, cams = probabilities_and_gradcam(package, package.build("cpu"), covid_images, torch.device("cpu"))
    net = package.build("cpu")
    layer = gradcam_layer(package.card["architecture"])
    x = torch.from_numpy(covid_images)[:, None]
    raw = GradCAM(net, layer, upsampler=lambda size: lambda m: m, postprocessing=lambda m: m)(
        x, class_idx=package.positive_index)[:, 0].detach().numpy()
    assert cams.shape == raw.shape and cams.max() > 0
    np.testing.assert_allclose(cams, raw, rtol=1e-3, atol=1e-4 * raw.max())
    old = GradCAM(net, layer)(x, class_idx=package.positive_index)[:, 0].detach().numpy()
    for cam, inverted in zip(cams, old):  # the inverted map the fix removes
        assert np.corrcoef(resize_map(cam, inverted.shape).ravel(), inverted.ravel())[0, 1] < -0.95


def test_probabilities_same_with_and_without_gradcam(package, covid_images):
    import torch

    cpu = torch.device("cpu")
    with_cam, cams = probabilities_and_gradcam(package, package.build("cpu"), covid_images, cpu, batch_size=4)
    plain = calibrated_probabilities(package, package.build("cpu"), covid_images, cpu, batch_size=16)
    assert cams.shape[0] == len(covid_images)
    np.testing.assert_allclose(with_cam, plain, atol=1e-5)
    logits = predict_logits(package.build("cpu"), covid_images, cpu, hflip_tta=False)
    assert logits.shape == (len(covid_images), len(package.labels))


def test_cancel_is_checked_every_batch(package, covid_images):
    import torch

    done = []
    with pytest.raises(Cancelled):
        probabilities_and_gradcam(package, package.build("cpu"), covid_images, torch.device("cpu"), batch_size=2,
                                  progress=done.append, cancel=lambda: bool(done))
    assert len(done) == 1  # stopped at the first check after the request


def test_to_volume_one_scale_per_study_hottest_where_raw_is_highest():
    rng = np.random.default_rng(0)
    cams = rng.random((2, 7, 7)).astype(np.float32)
    cams[1] *= 0.5  # half the evidence of slice 0 everywhere
    shape, box = (4, 40, 50), (slice(5, 35), slice(10, 45))
    lungs = np.zeros(shape, bool)
    lungs[:, 8:32, 12:44] = True
    heat = to_volume(cams, np.array([1.0, 1.0]), np.array([1, 2]), box, shape, lungs, percentile=100)
    assert heat.min() >= 0 and heat.max() <= 1 and not heat[~lungs].any() and not heat[[0, 3]].any()
    assert heat[1].max() == pytest.approx(1.0) and heat[2].max() == pytest.approx(0.5, abs=0.02)  # not 1 each
    raw = resize_map(cams[0], (30, 35)) * lungs[1, box[0], box[1]]
    assert np.unravel_index(heat[1, box[0], box[1]].argmax(), raw.shape) == np.unravel_index(raw.argmax(), raw.shape)
    assert np.corrcoef(heat[1][lungs[1]], raw[lungs[1, box[0], box[1]]])[0, 1] > 0.999
    weighted = to_volume(cams, np.array([0.2, 1.0]), np.array([1, 2]), box, shape, lungs, percentile=100)
    assert np.allclose(weighted[1], 0.2 * heat[1]) and np.allclose(weighted[2], heat[2])


def test_to_volume_from_labels_matches_the_previous_formula():
    """Built in the lung box from the labels (no full-volume mask copy): the values of the previous whole-slice
    formula, also with lung outside the box (it counts in the study scale, as before)."""
    rng = np.random.default_rng(1)
    cams = rng.random((3, 7, 7)).astype(np.float32)
    shape, box, indices, weights = (5, 40, 50), (slice(5, 35), slice(10, 45)), np.array([0, 2, 3]), rng.random(3)
    labels = np.zeros(shape, np.uint8)
    labels[:, 8:32, 12:28], labels[:, 8:32, 28:48] = 1, 2  # the left lung reaches past the box
    lungs = labels > 0
    previous = np.zeros(shape, np.float32)
    for cam, k in zip(cams, indices):
        previous[k, box[0], box[1]] = resize_map(cam, (30, 35))
        previous[k] *= lungs[k]
    inside = np.concatenate([previous[k, ::2, ::2][lungs[k, ::2, ::2]] for k in indices])
    scale = float(np.percentile(inside, 90))
    for weight, k in zip(weights, indices):
        previous[k] = np.minimum(previous[k] / scale, 1.0) * weight
    for mask in (labels, lungs):
        assert np.array_equal(to_volume(cams, weights, indices, box, shape, mask, percentile=90), previous)
