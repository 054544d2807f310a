"""Model package: a folder with ``model.json`` (the model card) and ``weights.safetensors``.

``model.json`` holds the task (``TASKS``), the architecture, the input spec (window, size, channels, value range),
the label map, calibration (temperature), the operating point and study rule, the training
data and validation metrics, and the sha256 of the weights. Loading checks the hash and uses
safetensors, so nothing is ever unpickled. The card is validated at load into a typed ``ModelCard``
(``ModelPackage.info``); ``ModelPackage.card`` keeps the whole JSON document for the figures it records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..input.preprocess import LUNG_WINDOW

SCHEMA_VERSION = 1
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"


def _models_dir() -> Path:
    """Where the shipped model packages are: ``$COVIDCT_MODELS_DIR``, else the package data
    ``CovidCTScreenLib/models/shipped`` of an installed wheel, else ``Resources/Models`` of the source tree (the one
    copy in the repository; editable installs and the Slicer module read it there)."""
    if os.environ.get("COVIDCT_MODELS_DIR"):
        return Path(os.environ["COVIDCT_MODELS_DIR"])
    import importlib.resources

    packaged = importlib.resources.files(__package__) / "shipped"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "Resources" / "Models"


MODELS_DIR = _models_dir()
DEFAULT_MODEL = "covidct-effnetlite0-v1"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


SLICE_CLASSIFICATION = "slice-classification"
LESION_SEGMENTATION = "lesion-segmentation"
TASKS = {SLICE_CLASSIFICATION: "per-slice classifier (covidct-screen, slice/study evaluation)",
         LESION_SEGMENTATION: "GGO / consolidation segmentation (lesion extent, segmentation evaluation)"}


def card_task(card: dict) -> str | None:
    """The task of a card; cards written before the task field was typed carry a description
    starting with "slice classification"."""
    task = str(card.get("task", ""))
    if task in TASKS:
        return task
    return SLICE_CLASSIFICATION if task.startswith("slice classification") else None


@dataclass(frozen=True)
class ModelCard:
    """The fields of ``model.json`` the code runs on, checked at load; the rest stays in ``raw``."""

    name: str
    task: str
    labels: tuple[str, ...]
    architecture: str
    input_size: int
    hu_window: tuple[float, float]
    weights_sha256: str
    positive_label: str | None = None  # classifiers
    slice_threshold: float | None = None
    temperature: float = 1.0
    study_min_fraction: float | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)

    @classmethod
    def from_dict(cls, card: dict, where: str = "model card") -> "ModelCard":
        """Validate ``card``; raises ``InputError`` naming every missing or wrong field."""
        problems: list[str] = []

        def get(path: str, kind, check=lambda v: True, default=None, required=True):
            value = card
            for key in path.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            if value is None:
                if required:
                    problems.append(f"{path} missing")
                return default
            if (isinstance(value, bool) or not isinstance(value, kind) or not check(value)):
                problems.append(f"{path} = {value!r} is not valid")
                return default
            return value

        if not isinstance(card, dict):
            raise InputError(f"{where}: not a JSON object")
        task = card_task(card)
        if task is None:
            problems.append(f"task {card.get('task')!r} is not one of {sorted(TASKS)}")
        labels = get("labels", list, lambda v: len(v) >= 2 and all(isinstance(x, str) for x in v), [])
        window = get("input.hu_window", list, lambda v: len(v) == 2 and v[0] < v[1], list(LUNG_WINDOW),
                     required=task != LESION_SEGMENTATION)  # lesion cards default to the lung window
        fields = dict(name=get("name", str, bool, ""), task=task or "", labels=tuple(labels),
                      weights_sha256=get("weights_sha256", str, lambda v: len(v) == 64, ""),
                      hu_window=(float(window[0]), float(window[1])))
        if task == LESION_SEGMENTATION:
            fields.update(architecture=get("network.architecture", str, bool, ""),
                          input_size=get("input.size", int, lambda v: v > 0, 0))
        else:
            shape = get("input.spatial_shape", list, lambda v: len(v) == 2 and v[0] == v[1] and v[0] > 0, [0])
            positive = get("positive_label", str, lambda v: v in labels)
            fields.update(architecture=get("architecture", str, bool, ""), input_size=int(shape[0]),
                          positive_label=positive,
                          slice_threshold=get("operating_point.slice_threshold", (int, float), lambda v: 0 < v < 1),
                          temperature=get("calibration.temperature", (int, float), lambda v: v > 0, 1.0),
                          study_min_fraction=get("study_rule.min_fraction", (int, float), lambda v: 0 <= v < 1))
        if problems:
            raise InputError(f"{where} is not a valid {task or 'model'} card: {'; '.join(problems)}")
        return cls(**fields, raw=card)


def card_summary(card: dict) -> list[str]:
    """A card as plain text lines (task, data, validation figures, operating point, limits): the one
    renderer the command line and both Slicer modules use."""
    training, validation = card.get("training", {}), card.get("validation", {})
    architecture = card.get("architecture") or card.get("network", {}).get("architecture", "?")
    lines = [f"Model {card.get('name', '?')} ({architecture}): {card.get('task', '')}",
             f"Method: {training.get('method', 'not recorded')}",
             f"Training data: {training.get('dataset', '')} {training.get('train', '')}".rstrip(),
             f"Validation data: {validation.get('split', 'not recorded')}"]
    for key, title in (("at_0.5", "at threshold 0.5"), ("at_operating_point", "at the operating point")):
        m = validation.get(key)
        if isinstance(m, dict):
            lines.append(f"Validation {title}: " + ", ".join(
                f"{k} {m[k]:.3f}" for k in ("auc", "sensitivity", "specificity", "f1", "accuracy")
                if isinstance(m.get(k), (int, float))))
    for name, score in (validation.get("scores") or {}).items():
        if isinstance(score, dict) and isinstance(score.get("dice_pooled"), (int, float)):
            lines.append(f"Validation {name}: pooled Dice {score['dice_pooled']:.3f}")
    op, rule = card.get("operating_point", {}), card.get("study_rule", {})
    if "slice_threshold" in op:
        lines.append(f"Slice threshold {op['slice_threshold']:.3f} ({op.get('chosen_by', '')}); temperature "
                     f"{card.get('calibration', {}).get('temperature', 1):.3f}; study positive when more than "
                     f"{rule.get('min_fraction', 0):.0%} of lung slices reach it")
    if training.get("command"):
        lines.append(f"Reproduce: {training['command']}")
    unsupported = card.get("unsupported_classes") or {}
    if unsupported:
        lines.append("Not assessed: " + "; ".join(f"{k} ({v})" for k, v in unsupported.items()))
    return lines


def card_html(card: dict) -> str:
    """``card_summary`` as escaped HTML (the Slicer modules' labels)."""
    import html

    first, *rest = card_summary(card)
    return f"<p><b>{html.escape(first)}</b></p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in rest) + "</ul>"


@dataclass
class ModelPackage:
    path: Path
    card: dict
    info: ModelCard | None = None

    def __post_init__(self):
        self.path = Path(self.path)
        if self.info is None:
            self.info = ModelCard.from_dict(self.card, str(self.path / CARD_NAME))

    @property
    def task(self) -> str:
        return self.info.task

    def require(self, task: str, purpose: str) -> None:
        """Refuse a package made for another task (e.g. a lesion model given to covidct-screen)."""
        if self.task != task:
            raise InputError(f"Model {self.name} is a {self.task} model; {purpose} needs a {task} model "
                             f"(shipped: {', '.join(available_models(task)) or 'none'})")

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def labels(self) -> list[str]:
        return list(self.info.labels)

    @property
    def positive_index(self) -> int:
        return self.info.positive_index

    def build(self, device: str = "cpu"):
        """The network with verified weights, in eval mode on ``device``."""
        from safetensors.torch import load_file

        from .networks import build_network

        net = build_network(self.card["architecture"], len(self.labels))
        state = load_file(str(self.path / WEIGHTS_NAME))
        net.load_state_dict({k: v.float() for k, v in state.items()})
        return net.to(device).eval()


def available_models(task: str | None = None) -> list[str]:
    """Names of the shipped model packages (``MODELS_DIR``), only those for ``task`` when given."""
    if not MODELS_DIR.is_dir():
        return []
    names = []
    for p in sorted(MODELS_DIR.iterdir()):
        try:
            card = json.loads((p / CARD_NAME).read_text())
        except (OSError, ValueError):
            continue
        if task is None or card_task(card) == task:
            names.append(p.name)
    return names


def load_package(name_or_path: str | os.PathLike | None = None) -> ModelPackage:
    """Read and verify a package, by folder path or by the name of a shipped one."""
    ref = name_or_path or DEFAULT_MODEL
    path = Path(ref)
    if not (path / CARD_NAME).is_file():
        path = MODELS_DIR / str(ref)
    card_path = path / CARD_NAME
    if not card_path.is_file():
        raise InputError(f"No model package at '{ref}': expected a folder with {CARD_NAME} and {WEIGHTS_NAME} "
                         f"(shipped models: {', '.join(available_models()) or 'none'})")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"Model card {card_path} is not valid JSON: {e}") from e
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"Model package {path} has no {WEIGHTS_NAME}")
    digest = sha256_of(weights)
    if digest != card.get("weights_sha256"):
        raise InputError(f"Model weights {weights} fail their sha256 check (card {card.get('weights_sha256')}, "
                         f"file {digest}); the package is corrupt or was modified")
    return ModelPackage(path=path, card=card, info=ModelCard.from_dict(card, str(card_path)))


def save_package(folder: str | os.PathLike, state_dict: dict, card: dict) -> ModelPackage:
    """Write weights (fp32 safetensors) and the card with its sha256, atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state_dict.items()}, str(tmp / WEIGHTS_NAME))
    card = {**card, "schema_version": SCHEMA_VERSION, "weights_sha256": sha256_of(tmp / WEIGHTS_NAME)}
    try:
        ModelCard.from_dict(card, f"card of {folder.name}")
    except InputError:
        shutil.rmtree(tmp)
        raise
    (tmp / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)
    return ModelPackage(path=folder, card=card)
