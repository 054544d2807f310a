"""report.html: the report folder as one self-contained page (pictures embedded as data URIs), built from
report.json only, so every section appears when its key is present and none fails when it is absent."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from ..lesions.manifestations import METHOD_NAMES

STYLE = """
body{font-family:system-ui,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:26px}
.notice{background:#fdecea;color:#8b1a1a;padding:8px 12px;border-radius:4px;font-weight:bold}
.verdict{font-size:24px;font-weight:bold;margin:10px 0 4px} .pos{color:#b22222} .neg{color:#2e7d32} .other{color:#b8860b}
.caution{color:#8a6d00} table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right;font-size:14px} th{background:#f2f2f2} td.l,th.l{text-align:left}
figure{margin:12px 0} figcaption{font-size:14px;color:#444} img{max-width:100%;border:1px solid #ddd}
.small{font-size:13px;color:#555} h3{font-size:15px;margin:12px 0 4px}
.keys{display:flex;flex-wrap:wrap;gap:12px} .keys figure{flex:1 1 45%;margin:0}
"""


def _img(folder: Path, name: str | None, alt: str) -> str:
    if not name or not (folder / name).is_file():
        return ""
    data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{escape(str(h))}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{escape(_fmt(c))}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def _verdict(rep: dict) -> str:
    v = rep.get("verdict", {})
    label = v.get("category") or v.get("label", "no verdict")
    css = {"COVID-19": "pos", "other pneumonia": "other"}.get(label, "pos" if v.get("positive") else "neg")
    out = [f'<div class="verdict {css}">{escape(label)}</div>']
    for key in ("reason", "summary"):
        if v.get(key):
            out.append(f"<p>{escape(str(v[key]))}</p>")
    if v.get("rule"):
        out.append(f'<p class="small">Rule: {escape(v["rule"])}</p>')
    if v.get("confidence_note"):
        css = "caution" if v.get("low_confidence") else "small"
        out.append(f'<p class="{css}">{escape(v["confidence_note"])}</p>')
    evidence = v.get("evidence")
    if evidence:
        out.append("<h2>Evidence</h2>" + _table(["finding", "value", "points to"],
                                                  [[e.get("finding"), e.get("value"), e.get("points_to")]
                                                   for e in evidence]))
    return "".join(out)


def extent_html(rep: dict) -> str:
    """Lesion extent per lung and per zone (when present) as HTML tables (also shown in the Slicer module)."""
    out = []
    m = rep.get("manifestations", {})
    rows = []
    for key, name in (("hu_bands", "HU bands"), ("learned", "lesion UNet")):
        for side in ("right", "left", "both"):
            e = m.get(key, {}).get("per_lung", {}).get(side)
            if e:
                rows.append([f"{name}, {side}", e.get("ggo_pct"), e.get("consolidation_pct"), e.get("lung_ml")])
    if rows:
        out.append("<h3>Per lung (% of the measured lung)</h3>"
                   + _table(["method, lung", "GGO %", "consolidation %", "lung mL"], rows))
    dist = rep.get("distribution")
    if dist and dist.get("zones"):
        zrows = []
        for side in ("right", "left"):
            for zone in ("upper", "middle", "lower"):
                z = dist["zones"].get(side, {}).get(zone)
                if z:
                    zrows.append([f"{side} {zone}", z.get("lesion_pct"), z.get("peripheral_pct"),
                                  z.get("central_pct"), z.get("score")])
        out.append("<h3>Per lung zone</h3>" + _table(["zone", "lesion %", "peripheral %", "central %", "score 0-5"],
                                                     zrows))
        facts = [f"{k.replace('_', ' ')}: {_fmt(dist[k])}" for k in ("bilateral", "peripheral_predominant",
                                                                     "lower_zone_predominant") if k in dist]
        sev = dist.get("severity_score")
        if sev:
            facts.append(f"severity score {sev.get('total')} of {sev.get('max')} ({sev.get('definition', '')})")
        out.append("<p>" + escape("; ".join(facts)) + "</p>")
    streaks = m.get("possible_fibrotic_streaks")
    if streaks:
        out.append(f"<p>Possible fibrotic streaks: {escape(str(streaks.get('candidates')))} candidates "
                   f"(heuristic, unvalidated).</p>")
    if not out:
        return "<p>Lesion extent was not measured in this run.</p>"
    return "".join(out)


def _key_slices(rep: dict, folder: Path) -> str:
    keys = rep.get("key_slices", [])
    out = []
    if rep.get("key_slice_rule"):
        out.append(f'<p class="small">Chosen by: {escape(rep["key_slice_rule"])}.</p>')
    method = next((k["lesion_method"] for k in keys if k.get("lesion_method")), None)
    rows = [[k.get("name", f"slice {k.get('slice')}"), k.get("zone"), k.get("lesion_pct"), k.get("probability")]
            for k in keys]
    out.append(_table(["slice", "zone", f"lesion % of the slice's lung ({method or 'not measured'})",
                       "classifier P(COVID-19)"], rows))
    figures = [f"<figure>{_img(folder, k.get('png'), k.get('name', ''))}</figure>" for k in keys]
    return "".join(out) + f'<div class="keys">{"".join(figures)}</div>'


def _slices(rep: dict, folder: Path) -> str:
    """The per-slice plot and, folded, the per-slice table of report.json ``slices`` (lesion % per method when
    measured, P(COVID-19)), with the column definitions."""
    slices = rep.get("slices", [])
    methods = list(slices[0].get("lesions_pct_of_lung", {})) if slices else []
    header = ["slice", "lung cm2"] + [f"{METHOD_NAMES.get(m, m)} {kind} %" for m in methods
                                      for kind in ("GGO", "consolidation", "lesion")] + ["P(COVID-19)"]
    rows = [[f"instance {s['instance_number']}" if s.get("instance_number") is not None else f"slice {s['slice']}",
             s.get("lung_area_cm2")] + [s["lesions_pct_of_lung"][m][k] for m in methods
                                        for k in ("ggo_pct", "consolidation_pct", "lesion_pct")]
            + [s.get("probabilities", {}).get("COVID-19")] for s in slices]
    columns = rep.get("slice_columns", {})
    notes = [rep.get("reliability", {}).get("per_slice_check")] + [
        columns[k] for k in ("lesions_pct_of_lung", "probabilities") if k in columns and
        (k != "lesions_pct_of_lung" or methods)]
    if not methods:
        notes.insert(0, "Lesions were not measured in this run: no per-slice lesion %.")
    return (f"<figure>{_img(folder, rep.get('files', {}).get('scores_plot'), 'per-slice evidence')}</figure>"
            + "".join(f'<p class="small">{escape(n.rstrip("."))}.</p>' for n in notes if n)
            + f"<details><summary>Per-slice table ({len(slices)} lung slices, as in slice_scores.csv)</summary>"
            + _table(header, rows) + "</details>")


def _input(rep: dict) -> str:
    i = rep.get("input", {})
    rows = [["source", i.get("source")], ["format", i.get("format")]]
    for key in ("series_description", "series_instance_uid", "convolution_kernel", "slice_thickness_mm"):
        if i.get(key) not in (None, ""):
            rows.append([key.replace("_", " "), i[key]])
    rows.append(["slices x rows x columns", " x ".join(str(v) for v in i.get("shape_zyx", []))])
    if rep.get("lung_mask", {}).get("source"):
        rows.append(["lung mask", rep["lung_mask"]["source"]])
    out = _table(["", ""], rows)
    choice = i.get("series_choice")
    if choice:
        out += (f"<p>This folder holds {len(choice['series'])} series; used {escape(choice['chosen'])} "
                f"({escape(choice['how'])}).</p>"
                + _table(["series UID", "description", "images", "slice mm", "kernel"],
                         [[s["series_instance_uid"], s["description"], s["images"], s["slice_thickness_mm"],
                           s["kernel"]] for s in choice["series"]]))
    return out


def _limits(rep: dict) -> str:
    items = [rep.get("notice", "")]
    rel = rep.get("reliability", {})
    items += [rel.get("caution"), rel.get("hu_ct")]
    for cls, why in rep.get("not_assessed", {}).items():
        items.append(f"Not assessed: {cls} ({why})")
    items.append(rep.get("manifestations", {}).get("caution"))
    return "<ul>" + "".join(f"<li>{escape(str(t))}</li>" for t in items if t) + "</ul>"


def render_html(rep: dict, folder: Path) -> str:
    """The whole page as a string; pictures are read from ``folder`` and embedded."""
    files = rep.get("files", {})
    dicom = [f"{k}: {v}" for k, v in files.items() if k.startswith("dicom_")]
    body = [
        "<h1>CovidCTScreen report</h1>",
        f'<div class="notice">{escape(rep.get("notice", "Research use only - not for clinical diagnosis"))}</div>',
        _verdict(rep),
        "<h2>Extent</h2>", extent_html(rep),
        "<h2>Key slices</h2>", _key_slices(rep, folder),
        "<h2>Per-slice evidence</h2>", _slices(rep, folder),
    ]
    if files.get("lesions_plot"):
        body += ["<h2>Lesions on the slice with the largest extent</h2>",
                 f"<figure>{_img(folder, files['lesions_plot'], 'lesions')}</figure>"]
    body += ["<h2>Input</h2>", _input(rep)]
    outputs = rep.get("dicom_outputs", {})
    if dicom or outputs:
        notes = dicom + ([f"not written: {outputs['not_written']}"] if outputs.get("not_written") else []) + list(
            outputs.get("notes", []))
        body += ["<h2>DICOM outputs</h2>", "<ul>" + "".join(f"<li>{escape(d)}</li>" for d in notes) + "</ul>"]
    body += ["<h2>Limits</h2>", _limits(rep),
             f'<p class="small">Model {escape(str(rep.get("model", {}).get("name", "")))}; created '
             f'{escape(str(rep.get("created", "")))}; CovidCTScreen '
             f'{escape(str(rep.get("software", {}).get("covidctscreen", "")))}.</p>']
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>CovidCTScreen report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_html(rep: dict, folder: Path, path: Path) -> Path:
    Path(path).write_text(render_html(rep, Path(folder)), encoding="utf-8")
    return Path(path)
