"""HTML the Slicer modules show: manifestations, the three-class category and a model card (plain Python)."""

from __future__ import annotations

import json
from pathlib import Path

from ..models import model_package


def manifestations_html(m: dict) -> str:
    """HTML lines: GGO / consolidation extent by both methods and the streak candidates of a report."""
    if "hu_bands" not in m:
        return ""
    lines = []
    for key, title in (("hu_bands", "HU bands"), ("learned", "lesion UNet")):
        both = m[key]["per_lung"]["both"]
        lines.append(f"{title}: GGO {both['ggo_pct']:.1f} %, consolidation {both['consolidation_pct']:.1f} % of the "
                     f"lung ({m[key]['dominant']})")
    lines.append(f"Possible fibrotic streaks: {m['possible_fibrotic_streaks']['candidates']} candidates "
                 f"(heuristic, unvalidated)")
    return "<br>" + "<br>".join(lines) + f"<br><i>{m.get('caution', '')}</i>"


def category_html(verdict: dict) -> str:
    """HTML: the three-class category, its reason and each piece of evidence (empty without lesion evidence)."""
    if not verdict.get("category"):
        return ""
    colour = {"COVID-19": "#b22222", "other pneumonia": "#b8860b", "normal": "#2e7d32"}[verdict["category"]]
    rows = "".join(f"<li>{e['finding']}: {e['value']} &rarr; <i>{e['points_to']}</i></li>"
                   for e in verdict.get("evidence", []))
    return (f"<span style='font-size:14pt;color:{colour}'><b>{verdict['category']}</b></span> "
            f"({verdict.get('pattern')} pattern; a category from stated rules, not a probability)<br>"
            f"{verdict.get('reason', '')}<ul style='margin:0'>{rows}</ul>")


def model_card_html(name: str = model_package.DEFAULT_MODEL) -> str:
    """HTML: training data and validation metrics of a model (a folder or a shipped name), read from its card."""
    card_path = Path(name) / model_package.CARD_NAME
    if not card_path.is_file():
        card_path = model_package.MODELS_DIR / name / model_package.CARD_NAME
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return f"<p><b>Model {name}:</b> model card not found at {card_path}.</p>"
    return model_package.card_html(card)
