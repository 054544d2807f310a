"""Which lines of a requirements file Slicer's Python still lacks (the Screen module installs them on Apply)."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path


def missing_requirements(requirements_file) -> list[str]:
    """Lines of a requirements file whose package is absent or older than its '>=' minimum."""
    missing = []
    for line in Path(requirements_file).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9][^,;\s]*))?", line)
        if not match:
            continue
        name, minimum = match.groups()
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            missing.append(line)
            continue
        if minimum and _version_tuple(installed) < _version_tuple(minimum):
            missing.append(line)
    return missing


def _version_tuple(version: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])
