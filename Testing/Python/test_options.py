"""One definition of the screening options (CovidCTScreenLib.app.options) behind covidct-screen, the worker,
covidct-batch and the Slicer parameter node."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO

from CovidCTScreenLib.app import batch, cli, worker
from CovidCTScreenLib.app.options import SCREEN_OPTION_DEFAULTS, ScreenOptions

PARSERS = {"covidct-screen": (cli.build_parser, ["ct.nrrd", "--out", "o"]),
           "worker": (worker.build_parser, ["ct.nrrd", "o"]),
           "covidct-batch": (batch.build_parser, ["--input-folder", "i", "--out", "o"])}
ARGS = ["--model", "m", "--device", "cpu", "--batch-size", "4", "--no-heatmap", "--no-lesions", "--lesion-model", "l"]


@pytest.mark.parametrize("name", PARSERS)
def test_every_command_line_reads_the_same_options(name):
    build, required = PARSERS[name]
    assert ScreenOptions.from_args(build().parse_args(required)) == ScreenOptions()
    parsed = ScreenOptions.from_args(build().parse_args(required + ARGS))
    assert parsed == ScreenOptions(model="m", device="cpu", batch_size=4, heatmap=False, lesions=False, lesion_model="l")


def test_worker_command_carries_every_option():
    options = ScreenOptions(model="m", device="cpu", batch_size=4, heatmap=False, lesions=False, lesion_model="l")
    cmd = worker.command("ct.nrrd", "o", **options.kwargs())
    assert ScreenOptions.from_args(worker.build_parser().parse_args(cmd[3:])) == options  # --no-lesions too
    with pytest.raises(ValueError, match="positive"):
        ScreenOptions(batch_size=0)


def test_slicer_parameter_node_defaults_come_from_the_definition():
    tree = ast.parse((REPO / "CovidCTScreen" / "CovidCTScreen.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CovidCTScreenParameterNode")
    defaults = {s.target.id: ast.unparse(s.value) for s in node.body if isinstance(s, ast.AnnAssign) and s.value}
    for field, option in (("device", "device"), ("computeHeatmap", "heatmap"), ("computeLesions", "lesions")):
        assert defaults[field] == f"SCREEN_OPTION_DEFAULTS[{option!r}]"
    # model / lesion_model None in the options means these defaults: the node names them (its combo boxes show them)
    assert defaults["model"] == "model_package.DEFAULT_MODEL"
    assert defaults["lesionModel"] == "lesion_seg.DEFAULT_LESION_MODEL"
    assert set(SCREEN_OPTION_DEFAULTS) == {"model", "device", "batch_size", "heatmap", "lesions", "lesion_model"}
