"""Labelled CT volumes: the COVID-CT-MD reader and the studies CSV, checked on the real volumes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA, NIFTI_CT

from CovidCTScreenLib.errors import InputError
from CovidCTScreenLib.input.volume_datasets import read_studies, studies_csv

MD = DATA / "covid-ct-md"


@pytest.fixture(scope="module")
def studies():
    return {s.patient: s for s in read_studies(MD)}


@pytest.fixture(scope="module")
def p002(studies):
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import load_ct

    volume = load_ct(studies["P002"].path)
    return volume, lung_mask(volume.hu, volume.spacing)


def test_covid_ct_md_patients_on_disk(studies):
    assert {p: s.label for p, s in studies.items()} == {"P002": "COVID-19", "cap002": "other pneumonia",
                                                        "normal002": "normal"}
    assert int(studies["P002"].slice_labels.sum()) == 68 and len(studies["P002"].slice_labels) == 133
    assert int(studies["cap002"].slice_labels.sum()) == 15 and len(studies["cap002"].slice_labels) == 131
    assert studies["normal002"].slice_labels is None
    for s in (studies["P002"], studies["cap002"]):
        assert np.all(np.diff(s.slice_z) > 0)
        assert s.lobe_labels.shape == (len(s.slice_labels), 5)
        # the dataset's lobe labels say a slice is infected exactly when its slice label does
        assert np.array_equal(s.lobe_labels.max(axis=1), s.slice_labels)


def test_p002_labels_follow_the_lesions(studies, p002):
    """Mapped by DICOM position the labels sit in the lungs and agree with the HU-band lesion extent;
    reversed (the wrong slice order) they do not."""
    from CovidCTScreenLib.lesions.hu_bands import hu_band_extent
    from CovidCTScreenLib.evaluation.metrics import roc_auc

    volume, lungs = p002
    y = studies["P002"].labels_for(volume)
    assert (y >= 0).all() and (y == 1).sum() == 68
    area_cm2 = lungs.lungs.sum(axis=(1, 2)) * volume.spacing[0] * volume.spacing[1] / 100
    assert area_cm2[y == 1].min() > 50  # every infected slice holds > 50 cm2 of lung
    bands = hu_band_extent(volume.hu, lungs, volume.spacing)
    ks = np.array([row["slice"] for row in bands.per_slice])
    lesion = np.array([row["both"]["lesion_pct"] for row in bands.per_slice])
    mapped, reversed_ = roc_auc(y[ks], lesion), roc_auc(y[::-1][ks], lesion)
    assert mapped > 0.65 and mapped > reversed_ + 0.1, (mapped, reversed_)


def test_cap002_labels_in_the_lungs(studies):
    from CovidCTScreenLib.lungs.lung_mask import lung_mask
    from CovidCTScreenLib.input.volume_io import load_ct

    volume = load_ct(studies["cap002"].path)
    y = studies["cap002"].labels_for(volume)
    assert (y == 1).sum() == 15
    lungs = lung_mask(volume.hu, volume.spacing).lungs
    assert (lungs.sum(axis=(1, 2))[y == 1] * volume.spacing[0] * volume.spacing[1] / 100).min() > 50


def test_studies_csv_by_instance_and_by_z(tmp_path, studies, p002):
    volume, _ = p002
    md = studies["P002"]
    import pydicom

    rows = []
    for f in sorted(md.path.iterdir()):
        h = pydicom.dcmread(f, stop_before_pixels=True)
        rows.append((int(h.InstanceNumber), float(h.ImagePositionPatient[2])))
    label_of_z = dict(zip(md.slice_z.tolist(), md.slice_labels.tolist()))
    (tmp_path / "inst.csv").write_text("instance,label\n" + "".join(f"{n},{label_of_z[z]}\n" for n, z in rows))
    (tmp_path / "z.csv").write_text("z,label\n" + "".join(f"{z},{label_of_z[z]}\n" for _, z in rows[::3]))
    (tmp_path / "studies.csv").write_text(
        f"study,label,patient_id,slice_labels\n{md.path},COVID-19,P002,inst.csv\n{md.path},covid,,z.csv\n"
        f"{NIFTI_CT},normal,A0001,\n")
    by_inst, by_z, nifti = studies_csv(tmp_path / "studies.csv")
    assert np.array_equal(by_inst.labels_for(volume), md.labels_for(volume))
    partial = by_z.labels_for(volume)
    assert (partial >= 0).sum() == len(rows[::3]) and by_z.patient == str(md.path)
    assert np.array_equal(partial[partial >= 0], md.labels_for(volume)[partial >= 0])
    assert nifti.label == "normal" and nifti.slice_labels is None


@pytest.mark.parametrize("row, labels, message", [
    ("{p},flu,,", None, "not one of COVID-19"),
    ("missing_dir,normal,,", None, "not found"),
    ("{nifti},normal,,lab.csv", "instance,label\n1,1\n", "need a DICOM series folder"),
    ("{p},COVID-19,,lab.csv", "instance,label\n999,1\n", "instance numbers [999]"),
    ("{p},COVID-19,,lab.csv", "z,label\n-437.7,2\n", "must be 0 or 1"),
])
def test_studies_csv_refuses_bad_rows(tmp_path, studies, row, labels, message):
    if labels:
        (tmp_path / "lab.csv").write_text(labels)
    (tmp_path / "s.csv").write_text("study,label,patient_id,slice_labels\n"
                                    + row.format(p=studies["P002"].path, nifti=NIFTI_CT) + "\n")
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        studies_csv(tmp_path / "s.csv")


def test_labels_of_another_series_are_refused(tmp_path, studies, p002):
    (tmp_path / "z.csv").write_text("z,label\n1000.0,1\n")
    (tmp_path / "s.csv").write_text(f"study,label,slice_labels\n{studies['P002'].path},COVID-19,z.csv\n")
    with pytest.raises(InputError, match="matches no slice"):
        studies_csv(tmp_path / "s.csv")[0].labels_for(p002[0])


def test_md_patient_without_index_row_keeps_its_study_label(tmp_path):
    """In the full set most COVID-19 patients have no slice labels (no Index.csv row): they train on the study label."""
    (tmp_path / "COVID-19 subjects").mkdir()
    (tmp_path / "COVID-19 subjects" / "P002").symlink_to(MD / "COVID-19 subjects" / "P002")
    (tmp_path / "Index.csv").write_text("Label Index,Diagnosis,Relative Path,Folder/ID\n0,COVID-19,./COVID-19/,P001\n")
    for f in ("Slice-level-labels-updated-1.npy", "Lobe-level-labels-updated-1.npy"):
        (tmp_path / f).symlink_to(MD / f)
    (study,) = read_studies(tmp_path)
    assert (study.patient, study.label, study.slice_labels) == ("P002", "COVID-19", None)


def test_md_diagnosis_must_match_the_folder(tmp_path):
    (tmp_path / "Normal subjects").mkdir()
    (tmp_path / "Normal subjects" / "P002").symlink_to(MD / "COVID-19 subjects" / "P002")
    (tmp_path / "Index.csv").write_text("Label Index,Diagnosis,Relative Path,Folder/ID\n1,COVID-19,./COVID-19/,P002\n")
    (tmp_path / "Slice-level-labels-updated-1.npy").symlink_to(MD / "Slice-level-labels-updated-1.npy")
    with pytest.raises(InputError, match="diagnosis COVID-19 but the folder is Normal subjects"):
        read_studies(tmp_path)
