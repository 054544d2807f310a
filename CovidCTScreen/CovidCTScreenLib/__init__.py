"""CovidCTScreen core: CT in, lung mask, per-slice COVID-19 scores, Grad-CAM, verdict, report.

Pure Python: no ``slicer`` import anywhere in this package except ``slicer_glue/mrml.py``, and no
torch at import time (torch is imported inside the functions that run a model).
Research use only; not for clinical diagnosis.
"""

__version__ = "0.1.0"
RESEARCH_USE_NOTICE = (
    "RESEARCH USE ONLY. Not a medical device and not for clinical diagnosis. "
    "Scores come from models trained on small public datasets of 8-bit CT figures; "
    "a radiologist must read the study."
)
