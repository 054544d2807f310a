"""Render MODEL_CARD.md of a model package from its model.json (every figure comes from the card).

Run: python scripts/model_card.py Resources/Models/covidct-effnetlite0-v1
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def render(card: dict) -> str:
    v, b, t = card["validation"], card["baseline"], card["training"]
    half, op = v["at_0.5"], v["at_operating_point"]

    def row(name, m):
        return (f"| {name} | {m['threshold']:.3f} | {m['accuracy']:.3f} | {m['sensitivity']:.3f} | "
                f"{m['specificity']:.3f} | {m['f1']:.3f} | {m['auc']:.3f} |")

    selection = ""
    if "selection" in t:
        sel = t["selection"]
        lines = "\n".join(f"| {c['model']} | {'on' if c['hflip_tta'] else 'off'} | {c['val_auc']:.4f} | "
                          f"{c['val_f1_at_0.5']:.4f} |" for c in sel["candidates"])
        runs = "\n".join(f"- run `{r['run']}`: seed {r['config']['seed']}, {r['config']['epochs']} epochs, best epoch "
                         f"{r['best_epoch']}; val AUC by epoch {r['val_auc_by_epoch']}" for r in sel["runs"])
        selection = f"""
## Model selection (val split only)
{runs}

| candidate | mirror TTA | val AUC | val F1 at 0.5 |
|---|---|---|---|
{lines}

Chosen: **{sel['chosen']['model']}**, mirror TTA {'on' if sel['chosen']['hflip_tta'] else 'off'}. {sel['note']}.
"""
    extra = "".join(f"\n- Also trained on: {line}" for line in t.get("images", []))
    extra += "".join(f"\n- HU CT patient (trained on): {line}" for line in t.get("hu_studies", []))
    selected = ("Last epoch of a fixed recipe kept (no epoch selection)" if t["config"].get("select") == "last"
                else "Epoch selection by validation AUC (per run; see below)")
    hu = card.get("hu_validation")
    if hu:
        hu_section = f"""## Validation on real HU CT ({hu['method']})
Per-slice AUC against the radiologists' slice labels, slices called COVID-19 and study verdicts of every held-out
patient, with 95 % intervals: `HU_VALIDATION.md` in this package (also `docs/hu_model.md`).
Pooled over {hu['pooled_n']['slices']} held-out HU lung slices of {hu['pooled_n']['patients']} patients
({hu['pooled_n']['positive']} COVID-19-positive targets): AUC {hu['pooled_auc']['a']['value']:.3f}
({hu['pooled_auc']['a']['ci'][0]:.3f}-{hu['pooled_auc']['a']['ci'][1]:.3f}); the previous model on the same slices
{hu['pooled_auc']['b']['value']:.3f} ({hu['pooled_auc']['b']['ci'][0]:.3f}-{hu['pooled_auc']['b']['ci'][1]:.3f}).
Only one COVID-19 volume (P002) has slice labels here: these figures are not a validation on a population.
Command: `{hu['command']}`"""
    else:
        hu_section = f"""## Behaviour on real HU CT (not validated)
{card.get('hu_ct_check', {}).get('summary', 'not checked')}
Per volume / slice: `{json.dumps(card.get('hu_ct_check', {}).get('non_covid_volumes', []))}`;
`{json.dumps(card.get('hu_ct_check', {}).get('covid_hu_slices', []))}` (command: `python scripts/domain_gap.py --update-card`)."""
    check = card.get("slice_label_check")
    if check:
        hu_section += f"\n\n{check['summary']} Command: `{check['command']}`."
    unsupported = "\n".join(f"- **{k}**: {why}" for k, why in card["unsupported_classes"].items())
    history = ", ".join(f"{h['epoch']}: {h['val_auc']:.3f}" for h in t["history"])
    return f"""# Model card: {card['name']}

**Research use only. Not a medical device; not for clinical diagnosis.**

- Task: {card.get('task_description', card['task'])}
- Architecture: {card['architecture']} ({t.get('initialisation', 'ImageNet')} initialisation), {len(card['labels'])} outputs {card['labels']}
- Method: {t.get('method_description', t['method'])}
- Weights: `weights.safetensors`, sha256 `{card['weights_sha256']}` (checked on every load)

## Training and validation data
- Dataset: {t['dataset']}
- Trained on: {t['train']}{extra}
- Selected and calibrated on: {t['val']}
- {t['test']}
- {selected}

## Validation metrics (COVID-CT val split, calibrated probabilities)
| operating point | threshold | accuracy | sensitivity | specificity | F1 | AUC |
|---|---|---|---|---|---|---|
{row('0.5', half)}
{row('Youden (shipped operating point)', op)}

Val AUC 95 % interval: {v['auc_95ci'][0]:.3f}-{v['auc_95ci'][1]:.3f} ({v['auc_95ci_method']}).
Against the plain baseline ({b['description']}: val AUC {b['val']['auc']}, F1 {b['val']['f1']}):
**AUC {b['delta_auc']:+.3f}, F1 at 0.5 {b['delta_f1_at_0.5']:+.3f}, F1 at the shipped operating point
{op['f1'] - b['val']['f1']:+.3f}: on par with the baseline, not a meaningful improvement.**
The validation split has {t['val'].split(':')[1].strip()}: small, so differences of a few hundredths are within noise.

{selection or 'Validation AUC by epoch: ' + history}

{hu_section}

## What the model does not do
{unsupported}

## Input
- {card['input']['hu_mapping']}; {card['input']['image_mapping']}
- {card['input']['crop']}; {card['input']['resize']}
- Domain gap: trained on 8-bit figures from papers, applied to HU CT through the lung window above.
  `python scripts/domain_gap.py` prints how real HU CT and the training figures compare.

## Calibration and study rule
- {card['calibration']['method']}, T = {card['calibration']['temperature']:.3f}, fitted on {card['calibration']['fitted_on']}
- Slice operating point {card['operating_point']['slice_threshold']:.3f} ({card['operating_point']['chosen_by']})
- Study rule: COVID-19 when more than {card['study_rule']['min_fraction']:.0%} of lung slices reach it; {card['study_rule']['source']}

## Reproduce
```
{t['command']}
python scripts/model_card.py <package folder>
python scripts/covid_ct_list.py ../shared/data/covid-ct val --out runs/covid-ct-val.csv
covidct-evaluate runs/covid-ct-val.csv --model <package folder> --threshold 0.5 --out runs/eval-val   # re-scores val
```
Training configuration: `{json.dumps(t['config'])}`
"""


def main() -> None:
    folder = Path(sys.argv[1])
    card = json.loads((folder / "model.json").read_text())
    (folder / "MODEL_CARD.md").write_text(render(card))
    print(f"wrote {folder / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
