"""The Slicer module files without a Slicer application: .ui names, syntax on Python 3.11 and 3.12,
light imports, CMake file lists, resources, and the pure helpers inside the module files."""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_CT

MODULES = {"CovidCTScreen": REPO / "CovidCTScreen" / "CovidCTScreen.py",
           "CovidCTTraining": REPO / "CovidCTTraining" / "CovidCTTraining.py"}
UI = {name: REPO / "Resources" / "UI" / f"{name}.ui" for name in MODULES}
BATCH = REPO / "scripts" / "batch_screen.py"
GLUE = [*sorted((REPO / "CovidCTScreen" / "CovidCTScreenLib" / "slicer_glue").glob("*.py")),
        REPO / "CovidCTScreen" / "CovidCTScreenLib" / "app" / "worker.py"]
LIGHT_LIB_MODULES = {"CovidCTScreenLib", "CovidCTScreenLib.errors", "CovidCTScreenLib.app", "CovidCTScreenLib.models",
                     "CovidCTScreenLib.slicer_glue", "CovidCTScreenLib.models.model_package",
                     "CovidCTScreenLib.app.worker", "CovidCTScreenLib.screening.verdict",
                     "CovidCTScreenLib.slicer_glue.mrml", "CovidCTScreenLib.slicer_glue.texts",
                     "CovidCTScreenLib.slicer_glue.requirements", "CovidCTScreenLib.app.process_runner",
                     "CovidCTScreenLib.app.batch", "CovidCTScreenLib.app.options", "CovidCTScreenLib.lesions",
                     "CovidCTScreenLib.lesions.lesion_seg"}
SLICER_SIDE = {"slicer", "qt", "ctk", "vtk", "SampleData", "PyTorchUtils"}
HEAVY = ("torch", "torchvision", "monai", "SimpleITK", "skimage", "matplotlib", "pydicom", "scipy",
         "efficientnet_lite_pytorch", "safetensors")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _ui_names(path: Path) -> set[str]:
    root = ET.parse(path).getroot()
    return {w.get("name") for w in root.iter("widget")}


def _ui_parameter_names(path: Path) -> dict[str, str]:
    """widget name -> SlicerParameterName dynamic property."""
    out = {}
    for w in ET.parse(path).getroot().iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                out[w.get("name")] = p.find("string").text
    return out


def _ui_attributes(tree: ast.Module) -> set[str]:
    """Every ``self.ui.<name>`` and ``getattr(self.ui, "<name>")`` / loop-string use in the module."""
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"):
            names.add(node.attr)
    src = ast.unparse(tree)
    names |= set(re.findall(r"\(['\"](\w+(?:PathLineEdit|ComboBox|Button|Widget|Label))['\"],", src))
    return names


def _parameter_fields(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class")


@pytest.mark.parametrize("name", list(MODULES))
def test_ui_parses_and_has_every_widget_the_code_uses(name):
    ui_names = _ui_names(UI[name])
    assert ET.parse(UI[name]).getroot().tag == "ui"
    tree = _tree(MODULES[name])
    used = _ui_attributes(tree)
    assert len(used) >= 8
    assert not used - ui_names, f"{MODULES[name].name} uses widgets missing from {UI[name].name}: {used - ui_names}"
    assert len(ui_names) == len([w for w in ET.parse(UI[name]).getroot().iter("widget")]), "duplicate widget names"
    # every widget bound to the parameter node names a real field of the @parameterNodeWrapper class
    fields = _parameter_fields(tree)
    bound = _ui_parameter_names(UI[name])
    assert bound and not set(bound.values()) - fields, set(bound.values()) - fields


# widget classes parameterNodeWrapper's GUI connectors accept for each field type (Slicer guiConnectors.py)
CONNECTABLE = {"bool": {"QCheckBox", "QPushButton"}, "int": {"QSpinBox", "QSlider"},
               "float": {"QDoubleSpinBox", "ctkSliderWidget"}, "choice": {"QComboBox"},
               "str": {"QLineEdit", "QTextEdit"}, "node": {"qMRMLNodeComboBox"}, "path": {"ctkPathLineEdit"}}


def _field_kinds(tree: ast.Module) -> dict[str, str]:
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and any(
        isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in n.decorator_list))
    kinds = {}
    for s in cls.body:
        if not isinstance(s, ast.AnnAssign):
            continue
        text = ast.unparse(s.annotation)
        if "Choice(" in text:
            kinds[s.target.id] = "choice"
        elif text.startswith("vtkMRML"):
            kinds[s.target.id] = "node"
        else:
            base = re.sub(r"^Annotated\[(\w+).*", r"\1", text)
            kinds[s.target.id] = {"Path": "path", "pathlib.Path": "path"}.get(base, base)
    return kinds


@pytest.mark.parametrize("name", list(MODULES))
def test_bound_widgets_have_a_gui_connector(name):
    """A widget bound with SlicerParameterName must be of a class the connector for its field type takes."""
    kinds = _field_kinds(_tree(MODULES[name]))
    classes = {w.get("name"): w.get("class") for w in ET.parse(UI[name]).getroot().iter("widget")}
    for widget, field in _ui_parameter_names(UI[name]).items():
        assert classes[widget] in CONNECTABLE[kinds[field]], (widget, classes[widget], field, kinds[field])


def test_screen_parameter_node_has_the_issue_fields():
    fields = _parameter_fields(_tree(MODULES["CovidCTScreen"]))
    assert {"inputVolume", "model", "lesionModel", "device", "sliceThreshold", "heatmapOpacity", "outputSegmentation",
            "outputHeatmap", "outputTable", "outputChart"} <= fields


@pytest.mark.parametrize("path", [*MODULES.values(), BATCH, *GLUE], ids=lambda p: p.name)
@pytest.mark.parametrize("version", [(3, 11), (3, 12)])
def test_syntax_valid_on_311_and_312(path, version):
    ast.parse(path.read_text(), str(path), feature_version=version)
    compile(path.read_text(), str(path), "exec")


def _top_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported at import time: module-level statements (also inside if/try), not in functions."""
    found = []

    def visit(stmts):
        for s in stmts:
            if isinstance(s, ast.Import):
                found.extend(a.name for a in s.names)
            elif isinstance(s, ast.ImportFrom):
                if s.level:
                    found.extend(f".{a.name}" for a in s.names)
                elif s.module == "__future__":
                    continue
                else:
                    found.append(s.module)
                    # 'from Pkg import sub' imports Pkg.sub when sub is a submodule
                    pkg_dir = REPO / "CovidCTScreen" / s.module.replace(".", "/")
                    found.extend(f"{s.module}.{a.name}" for a in s.names if (pkg_dir / f"{a.name}.py").is_file())
            elif isinstance(s, (ast.If, ast.Try, ast.With)):
                visit(s.body)
                visit(getattr(s, "orelse", []))
                for h in getattr(s, "handlers", []):
                    visit(h.body)
                visit(getattr(s, "finalbody", []))
    visit(tree.body)
    return found


@pytest.mark.parametrize("path", [*MODULES.values(), BATCH], ids=lambda p: p.name)
def test_nothing_heavy_imported_at_module_import(path):
    stdlib = set(sys.stdlib_module_names)
    for name in _top_level_imports(_tree(path)):
        top = name.split(".")[0]
        ok = top in stdlib or top in SLICER_SIDE or name in LIGHT_LIB_MODULES
        assert ok, f"{path.name} imports {name} at module import time"


def test_glue_imports_no_torch_under_plain_python():
    """mrml, the glue texts, worker, model_package, lesion_seg and the batch script import without torch / SimpleITK / matplotlib."""
    code = ("import sys, importlib.util\n"
            "import CovidCTScreenLib.app.worker, CovidCTScreenLib.models.model_package\n"
            "import CovidCTScreenLib.slicer_glue.mrml, CovidCTScreenLib.slicer_glue.texts\n"
            "import CovidCTScreenLib.lesions.lesion_seg\n"
            f"spec = importlib.util.spec_from_file_location('batch_screen', {str(BATCH)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            f"print(sorted(k for k in sys.modules if k.split('.')[0] in {HEAVY!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"heavy modules imported: {out.stdout}"


def _cmake_scripts(cmake: Path) -> set[str]:
    text = cmake.read_text()
    block = re.search(r"set\(MODULE_PYTHON_SCRIPTS(.*?)\)", text, re.S).group(1)
    name = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
    return {line.strip().replace("${MODULE_NAME}", name) for line in block.splitlines() if line.strip()}


@pytest.mark.parametrize("name", list(MODULES))
def test_cmake_lists_every_python_file_explicitly(name):
    cmake = REPO / name / "CMakeLists.txt"
    text = cmake.read_text()
    assert "GLOB" not in text.upper()
    listed = _cmake_scripts(cmake)
    actual = {f"{name}.py"} | {str(p.relative_to(REPO / name)) for p in (REPO / name / f"{name}Lib").rglob("*.py")}
    assert listed == actual, f"missing in CMake: {actual - listed}; listed but absent: {listed - actual}"
    assert "WITH_GENERIC_TESTS" in text and re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)",
                                                      text)


def test_top_level_cmake_is_a_slicer_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY \"Chest\"", "EXTENSION_CONTRIBUTORS",
                "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                "EXTENSION_DEPENDS \"PyTorch\"", "find_package(Slicer REQUIRED)", "add_subdirectory(CovidCTScreen)",
                "add_subdirectory(CovidCTTraining)", "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert key in text, key


def _module_constant(path: Path, name: str):
    for node in _tree(path).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in {path.name}")


def _module_function(path: Path, name: str):
    """A self-contained function of a module file that imports slicer/qt, compiled on its own."""
    tree = _tree(path)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {}
    module = ast.fix_missing_locations(ast.Module([ast.Import([ast.alias("re")]), fn], []))
    exec(compile(module, str(path), "exec"), namespace)
    return namespace[name]


def test_resources_present_and_sample_hash():
    for rel in ("UI/CovidCTScreen.ui", "UI/CovidCTTraining.ui", "Icons/CovidCTScreen.png", "Icons/CovidCTTraining.png",
                "Icons/CovidCTScreenSample.png", "requirements.txt", "requirements-training.txt"):
        assert (REPO / "Resources" / rel).is_file(), rel
    for rel in ("Icons/CovidCTScreen.png", "Icons/CovidCTTraining.png"):
        assert (REPO / "Resources" / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = MODULES["CovidCTScreen"]
    assert _module_constant(path, "SAMPLE_NAME") == SAMPLE_CT.name
    assert _module_constant(path, "SAMPLE_SHA256") == hashlib.sha256(SAMPLE_CT.read_bytes()).hexdigest()


def test_requirements_minimum_versions_only():
    lines = [ln.split("#")[0].strip() for ln in (REPO / "Resources" / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+>=[0-9][0-9.]*", ln) for ln in lines), lines
    names = {re.split(r">=", ln)[0].lower() for ln in lines}
    assert not names & {"torch", "torchvision", "simpleitk", "numpy"}  # PyTorchUtils / Slicer's own
    # every third-party package the core imports lazily is installed on first Apply
    assert {"monai", "pydicom", "scikit-image", "safetensors", "matplotlib", "efficientnet-lite-pytorch"} <= names


def test_no_tqdm_scraping_and_no_runner_shared_across_modules():
    """Both modules run their jobs through CovidCTScreenLib.app.process_runner; no regex over progress bars."""
    for name, path in MODULES.items():
        text = path.read_text()
        assert "process_runner" in text and "_QtWorkerRun" not in text and "tqdm" not in text, name
        assert "qt.QProcess" not in text, name


def test_training_gui_offers_every_implemented_method():
    from CovidCTTrainingLib.methods import METHODS

    methods = _module_constant(MODULES["CovidCTTraining"], "METHODS")
    assert sorted(methods.values()) == sorted(METHODS)
    assert all("unlabelled" in k for k, v in methods.items() if v in ("consistency", "ssresnet", "selftrans"))
    assert "not yet available" not in UI["CovidCTTraining"].read_text()


def test_self_tests_exist_and_mirror_pytest():
    for name, path in MODULES.items():
        tree = _tree(path)
        test_cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{name}Test")
        assert any(isinstance(b, ast.Name) and b.id == "ScriptedLoadableModuleTest" for b in test_cls.bases)
        methods = {f.name for f in test_cls.body if isinstance(f, ast.FunctionDef)}
        assert "runTest" in methods and len([m for m in methods if m.startswith("test_")]) >= 3
    screen_tests = {f.name for f in ast.walk(_tree(MODULES["CovidCTScreen"])) if isinstance(f, ast.FunctionDef)}
    assert {"test_volume_geometry_roundtrip", "test_process_sample_ct", "test_bad_input_refused_without_nodes"} <= \
        screen_tests


def test_logic_process_signature():
    tree = _tree(MODULES["CovidCTScreen"])
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CovidCTScreenLogic")
    process = next(f for f in logic.body if isinstance(f, ast.FunctionDef) and f.name == "process")
    args = [a.arg for a in process.args.args]
    assert args[:5] == ["self", "inputVolumeNode", "model", "device", "waitForCompletion"]
    defaults = dict(zip(args[-len(process.args.defaults):], process.args.defaults))
    assert ast.literal_eval(defaults["waitForCompletion"]) is True and ast.literal_eval(defaults["device"]) == "auto"
