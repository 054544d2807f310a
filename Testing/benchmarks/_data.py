"""The real data the benchmarks read: ``$COVIDCT_DATA``, else ``../shared/data`` beside the checkout (as the tests'
conftest). Imported as a sibling module: a benchmark run as ``python Testing/benchmarks/x.py`` has this folder on
``sys.path``."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("COVIDCT_DATA", REPO.parent / "shared" / "data"))
