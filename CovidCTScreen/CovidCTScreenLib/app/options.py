"""The one definition of the screening options, shared by covidct-screen, the worker the Slicer module
starts, covidct-batch and the Slicer parameter node (``SCREEN_OPTION_DEFAULTS``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

DEVICES = ("auto", "cuda", "cpu")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (so ``--batch-size 0`` is refused with one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


@dataclass(frozen=True)
class ScreenOptions:
    """How one CT is screened; ``pipeline.screen(source, **options.kwargs())``."""

    model: str | None = None  # shipped model name or package folder (None: the default model)
    device: str = "auto"
    batch_size: int | None = None  # slices per batch (None: 64 on GPU, 16 on CPU)
    heatmap: bool = True  # Grad-CAM
    lesions: bool = True  # GGO / consolidation extent and possible fibrotic streaks
    lesion_model: str | None = None  # lesion package name or folder (None: lesion_seg.DEFAULT_LESION_MODEL)

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not one of {DEVICES}")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or int(self.batch_size) < 1):
            raise ValueError(f"batch size {self.batch_size} is not a positive number")

    def kwargs(self) -> dict:
        return asdict(self)

    def argv(self) -> list[str]:
        """The same options as command-line arguments (for the worker process)."""
        args = ["--device", self.device]
        if self.model:
            args += ["--model", str(self.model)]
        if self.batch_size:
            args += ["--batch-size", str(int(self.batch_size))]
        if self.lesion_model:
            args += ["--lesion-model", str(self.lesion_model)]
        return args + ["--no-heatmap"] * (not self.heatmap) + ["--no-lesions"] * (not self.lesions)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ScreenOptions":
        return cls(model=args.model, device=args.device, batch_size=args.batch_size,
                   heatmap=not getattr(args, "no_heatmap", False), lesions=not getattr(args, "no_lesions", False),
                   lesion_model=getattr(args, "lesion_model", None))


SCREEN_OPTION_DEFAULTS = {f.name: f.default for f in fields(ScreenOptions)}


def add_screen_options(parser: argparse.ArgumentParser, steps: bool = True) -> None:
    """--model, --device, --batch-size and (with ``steps``) --no-heatmap, --no-lesions."""
    parser.add_argument("--model", default=None,
                        help="model package folder or shipped model name (default: shipped model)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="slices per batch (default 64 on GPU, 16 on CPU)")
    if steps:
        parser.add_argument("--no-heatmap", action="store_true", help="skip Grad-CAM (faster)")
        parser.add_argument("--no-lesions", action="store_true",
                            help="skip the GGO / consolidation / streak measurement")
        parser.add_argument("--lesion-model", default=None,
                            help="lesion model package folder or shipped name (default: covidct-lesion-unet-v1)")
