"""Shared fixtures: the real data in ../shared/data (never copied into the project) and the shipped model."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("COVIDCT_DATA", REPO.parent / "shared" / "data"))
SAMPLE_CT = REPO / "Resources" / "SampleData" / "Lung_Dx-A0002_chestCT.nrrd"
DICOM_SERIES = DATA / "chest-ct" / "Lung_Dx-A0002_B40f"
NIFTI_CT = DATA / "chest-ct" / "Lung_Dx-A0001_5mm_B.nii.gz"
COVID_HU = DATA / "covid-hu-slices"
COVID_CT = DATA / "covid-ct"
COVID_CT_MD = DATA / "covid-ct-md"
NORMAL_CT = COVID_CT_MD / "Normal subjects" / "normal002"
COVID19_CT = COVID_CT_MD / "COVID-19 subjects" / "P002"


@pytest.fixture(scope="session", autouse=True)
def _real_data_present():
    """The suite runs on real data: fail loudly (never skip) when it is missing."""
    missing = [p for p in (DICOM_SERIES, NIFTI_CT, COVID_HU, COVID_CT, SAMPLE_CT, NORMAL_CT, COVID19_CT) if not p.exists()]
    if missing:
        pytest.fail(f"real test data missing: {missing} (expected ../shared/data beside the checkout, "
                    f"or set COVIDCT_DATA)", pytrace=False)


def tree_digest(path: Path) -> str:
    """sha256 over every file below ``path`` (or of the file): proves an input was not modified."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def mini_class_folder(root: Path, per_class: int) -> Path:
    """A class-per-folder image set (CT_COVID/, CT_NonCOVID/) of real COVID-CT val images, linked, not copied."""
    for cls in ("COVID", "NonCOVID"):
        (root / f"CT_{cls}").mkdir(parents=True)
        for name in (COVID_CT / "splits" / f"val_{cls}.txt").read_text().split()[:per_class]:
            (root / f"CT_{cls}" / name).symlink_to(COVID_CT / f"CT_{cls}" / name)
    return root


@pytest.fixture(scope="session")
def dicom_ct():
    from CovidCTScreenLib.input.volume_io import load_ct

    return load_ct(DICOM_SERIES)


@pytest.fixture(scope="session")
def nifti_ct():
    from CovidCTScreenLib.input.volume_io import load_ct

    return load_ct(NIFTI_CT)


@pytest.fixture(scope="session")
def dicom_mask(dicom_ct):
    from CovidCTScreenLib.lungs.lung_mask import lung_mask

    return lung_mask(dicom_ct.hu, dicom_ct.spacing)


@pytest.fixture(scope="session")
def nifti_mask(nifti_ct):
    from CovidCTScreenLib.lungs.lung_mask import lung_mask

    return lung_mask(nifti_ct.hu, nifti_ct.spacing)


@pytest.fixture(scope="session")
def normal_ct():
    """normal002 of COVID-CT-MD: a complete normal chest CT in HU (2 mm, upper abdomen included)."""
    from CovidCTScreenLib.input.volume_io import load_ct

    return load_ct(NORMAL_CT)


@pytest.fixture(scope="session")
def normal_mask(normal_ct):
    from CovidCTScreenLib.lungs.lung_mask import lung_mask

    return lung_mask(normal_ct.hu, normal_ct.spacing)


@pytest.fixture(scope="session")
def covid19_ct():
    """P002 of COVID-CT-MD: COVID-19, ground glass and consolidation in both lower lobes."""
    from CovidCTScreenLib.input.volume_io import load_ct

    return load_ct(COVID19_CT)


@pytest.fixture(scope="session")
def covid19_mask(covid19_ct):
    from CovidCTScreenLib.lungs.lung_mask import lung_mask

    return lung_mask(covid19_ct.hu, covid19_ct.spacing)


def infected_slices(ct, row: int = 1) -> np.ndarray:
    """Radiologists' slice labels of a COVID-CT-MD volume (``Index.csv`` row) in array order (z ascending):
    label index i is file IM{i+1:04d}.dcm, the slices in descending location (head first)."""
    labels = np.load(COVID_CT_MD / "Slice-level-labels-updated-1.npy")[row][: ct.shape[0]]
    return labels[::-1].astype(bool)


@pytest.fixture
def scene():
    """A fresh real MRML scene (slicer-core), also set as ``slicer.mrmlScene``."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)


def load_slicer_module(monkeypatch, path: Path, qt=None):
    """Import a Slicer module file outside the application. slicer-core has MRML but not the app: the
    module base classes, parameterNodeWrapper, qt (or the given stand-in) and ctk are minimal stand-ins."""
    import importlib.util
    import sys
    import types

    class _Base:
        def __init__(self, *args, **kwargs):
            pass

        def getParameterNode(self):
            raise NotImplementedError

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(slm, name, type(name, (_Base,), {}))
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = pnw.WithinRange = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)
    monkeypatch.setitem(sys.modules, "qt", qt or types.ModuleType("qt"))
    monkeypatch.setitem(sys.modules, "ctk", types.ModuleType("ctk"))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mini_covid_ct(root: Path, n_per_class: dict | None = None) -> Path:
    """A COVID-CT folder with a few real images per class and split, linked from the shared data."""
    for d in ("CT_COVID", "CT_NonCOVID", "splits", "meta"):
        (root / d).mkdir(parents=True)
    for cls in ("COVID", "NonCOVID"):
        for split, n in (n_per_class or {"train": 4, "val": 3}).items():
            names = (COVID_CT / "splits" / f"{split}_{cls}.txt").read_text().split()[:n]
            (root / "splits" / f"{split}_{cls}.txt").write_text("\n".join(names) + "\n")
            for name in names:
                (root / f"CT_{cls}" / name).symlink_to(COVID_CT / f"CT_{cls}" / name)
    for meta in ("COVID-CT-MetaInfo.csv", "NonCOVID-CT-MetaInfo.csv"):
        with open(COVID_CT / "meta" / meta, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        (root / "meta" / meta).write_text("\n".join(",".join(f'"{c}"' for c in r) for r in rows) + "\n")
    return root
