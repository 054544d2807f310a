"""Model package: a folder with ``model.json`` (the model card) and ``weights.safetensors``.

``model.json`` holds the architecture, the input spec (window, size, channels, value range),
the label map, calibration (temperature), the operating point and study rule, the training
data and validation metrics, and the sha256 of the weights. Loading checks the hash and uses
safetensors, so nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

SCHEMA_VERSION = 1
CARD_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
MODELS_DIR = Path(os.environ.get("COVIDCT_MODELS_DIR", Path(__file__).resolve().parents[2] / "Resources" / "Models"))
DEFAULT_MODEL = "covidct-effnetlite0-v1"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelPackage:
    path: Path
    card: dict

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def labels(self) -> list[str]:
        return self.card["labels"]

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.card["positive_label"])

    def build(self, device: str = "cpu"):
        """The network with verified weights, in eval mode on ``device``."""
        from safetensors.torch import load_file

        from .networks import build_network

        net = build_network(self.card["architecture"], len(self.labels))
        state = load_file(str(self.path / WEIGHTS_NAME))
        net.load_state_dict({k: v.float() for k, v in state.items()})
        return net.to(device).eval()


def available_models() -> list[str]:
    """Names of the model packages shipped in ``Resources/Models``."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / CARD_NAME).is_file())


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
    return ModelPackage(path=path, card=card)


def save_package(folder: str | os.PathLike, state_dict: dict, card: dict) -> ModelPackage:
    """Write weights (fp32 safetensors) and the card with its sha256, atomically (temp folder, then rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tmp.chmod(0o755)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state_dict.items()}, str(tmp / WEIGHTS_NAME))
    card = {**card, "schema_version": SCHEMA_VERSION, "weights_sha256": sha256_of(tmp / WEIGHTS_NAME)}
    (tmp / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        tmp.rename(folder)
        import shutil

        shutil.rmtree(old)
    else:
        tmp.rename(folder)
    return ModelPackage(path=folder, card=card)
