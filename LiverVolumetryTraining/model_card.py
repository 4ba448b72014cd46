"""Render a bundle's ``MODEL.md`` from its ``model.json`` (numbers never typed by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from LiverVolumetryLib.atomic import write_text_atomic

CHAOS_CREDIT = (
    "CHAOS challenge training data (Kavur AE, et al. CHAOS Challenge - combined (CT-MR) healthy abdominal "
    "organ segmentation. Med Image Anal 2021;69:101950; data doi:10.5281/zenodo.3431873), MR T2-SPIR "
    "series with manual liver labels, licensed CC BY-SA 4.0. NIfTI conversion (1.25 x 1.25 x 7.7 mm) as "
    "published with Q-Net (Shen Q, et al., arXiv:2208.11451)."
)


def _md_cell(text: str) -> str:
    """Free text given at export, safe in a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows]])


def _batch(recipe: dict) -> str:
    """How a training step's batch is drawn, in words."""
    if "volumes_per_batch" in recipe:  # epoch-based (volumetry-net)
        pos, neg = recipe.get("pos_neg", [1, 1])
        return (f"{recipe['volumes_per_batch']} volumes x {recipe.get('samples_per_volume')} patches per step, "
                f"positive:negative centres {pos}:{neg}")
    return f"batch {recipe.get('batch_size')}, positive fraction {recipe.get('positive_fraction')}"


def render(spec: dict, notes: str = "") -> str:
    """Markdown model card for a ``model.json`` dict."""
    training, validation = spec.get("training", {}), spec.get("validation", {})
    recipe = training.get("recipe", {})
    net = spec["network"]
    per_case = validation.get("dice_per_case", {})
    lines = [
        f"# Model card: {spec['name']} {spec['version']}",
        "",
        spec.get("description", ""),
        "",
        "## Intended use",
        "",
        "Segmentation of the whole liver (parenchyma, vessels and lesions inside it) on 3D abdominal MRI, "
        "for liver volumetry and whole-liver radiomics, with review and correction by a reader. "
        "Research use; not a medical device.",
        "",
        "## Model",
        "",
        _table([
            ("network", f"MONAI `{net['class']}` {json.dumps(net.get('args', {}))}"),
            ("preprocessing", f"RAS, {spec['preprocessing']['spacing_mm']} mm, intensity "
                              f"{json.dumps(spec['preprocessing']['intensity'])}"),
            ("inference", json.dumps(spec.get("inference", {}))),
            ("post-processing", json.dumps(spec.get("postprocessing", {}))),
            ("weights", f"`{spec['weights']['file']}`, SHA-256 `{spec['weights']['sha256']}`"),
        ] + ([("ONNX graph", f"`{onnx['file']}` (the same network for ONNX Runtime on CPU), SHA-256 `{onnx['sha256']}`")]
             if (onnx := spec.get("onnx")) else [])),
        "",
        "## Training",
        "",
        _table([
            ("data", _md_cell(training.get("data") or "not recorded")),
            ("training cases", ", ".join(map(str, training.get("cases", [])))),
            ("synthetic phantoms", f"{training.get('phantoms', 0)} seeded phantoms "
                                   f"({', '.join(recipe.get('phantom_contrasts', ['t1_portal_venous']))}) "
                                   f"(`LiverVolumetryLib.phantom`), sampled in {recipe.get('phantom_fraction', 0):.0%} "
                                   "of patches"),
            ("recipe", f"`{recipe.get('name', 'liver-mri')}`: patches {recipe.get('patch_size')}, {_batch(recipe)}, "
                       f"loss {recipe.get('loss')}, {json.dumps(recipe.get('optimizer'))}, {recipe.get('schedule')} "
                       f"schedule, augmentation {json.dumps(recipe.get('augmentation'))}"),
            ("iterations", f"{training.get('iterations')}"
                           + (f" ({training['epochs']} epochs)" if training.get("epochs") is not None else "")
                           + f" (checkpoint: {training.get('checkpoint')}), "
                           + {"bf16": "bfloat16 mixed precision"}.get(training.get("precision"), "float32")),
        ] + ([("stages", "; ".join(f"{k + 1}. {json.dumps(stage)}" for k, stage in enumerate(stages))
                + " (each from the weights the one before ended with; the row above is the last stage's)")]
             if (stages := recipe.get("stages")) else [])
          + ([("started from", f"{start['name']} {start['version']} (weights SHA-256 `{start['sha256']}`)")]
             if (start := training.get("init_from")) else [])),
        "",
        "## Validation",
        "",
        validation.get("protocol") or ("No case was held out of this model's training: the cross-validation "
                                       "below estimates how the recipe does on cases it has not seen."
                                       if spec.get("cross_validation") else "none recorded"),
        "",
    ]
    if per_case:
        lines += ["| case | Dice |", "| --- | --- |", *[f"| {c} | {d:.3f} |" for c, d in per_case.items()],
                  f"| **mean ± SD** | **{validation['dice_mean']:.3f} ± {validation.get('dice_sd') or 0:.3f}** |", ""]
    if spec.get("cross_validation"):
        lines += crossval_section(spec["cross_validation"], (spec.get("inference") or {}).get("threshold"))
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def _pm(stats: dict | None, digits: int = 3) -> str:
    if not stats or stats.get("mean") is None:
        return "n/a"
    sd = stats.get("sd")
    return f"{stats['mean']:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _shipped_note(chosen: float, shipped: float | None) -> str:
    if shipped is None or math.isclose(shipped, chosen):
        return " (shipped)" if shipped is not None else ""
    return f"; this bundle ships {shipped:g} instead (set at export)"


def crossval_section(cv: dict, shipped: float | None = None) -> list[str]:
    """Cross-validation: per-case out-of-fold Dice per threshold, and the evaluate summary;
    ``shipped``: the bundle's own threshold (export's ``--threshold`` may differ from crossval's)."""
    thresholds = [str(t) for t in cv["thresholds"]]
    unsure = cv.get("unsure_fraction_per_case") or {}  # absent in summaries written before it was recorded
    extra = [("unsure fraction", lambda case: f"{unsure[case]:.2f}")] if unsure else []
    its = sorted(set(cv.get("iterations", [])))
    lines = ["## Cross-validation", "", cv["protocol"] + f" (recipe `{cv.get('recipe')}`, "
             f"{' / '.join(map(str, its))} iterations per fold).", "",
             "Folds: " + "; ".join(", ".join(fold) for fold in cv["folds"]) + ".", "",
             "| case | " + " | ".join(f"Dice @ {t}" for t in thresholds) + " | nested threshold |"
             + "".join(f" {title} |" for title, _ in extra),
             "| --- | " + " | ".join("---" for _ in thresholds) + " | --- |" + " --- |" * len(extra)]
    for case, by_t in cv["dice_per_case"].items():
        lines.append(f"| {case} | " + " | ".join(f"{by_t[t]:.3f}" for t in thresholds)
                     + f" | {cv['nested_threshold'][case]:g} |" + "".join(f" {cell(case)} |" for _, cell in extra))
    lines += ["| **mean** | " + " | ".join(f"**{cv['dice_mean_by_threshold'][t]:.3f}**" for t in thresholds) + " | |"
              + " |" * len(extra),
              "", f"Out-of-fold Dice with each case's nested threshold: **{cv['dice_mean']:.3f} ± "
              f"{cv.get('dice_sd') or 0:.3f}** (lowest {cv['dice_min']:.3f}). Threshold chosen on all folds: "
              f"{cv['threshold']:g}" + _shipped_note(cv["threshold"], shipped) + ".", ""]
    ev = cv.get("evaluation") or {}
    if ev:
        vol, rad, ba = ev.get("volume") or {}, ev.get("radiomics") or {}, (ev.get("volume") or {}).get("bland_altman")
        rows = [("Dice", _pm(ev.get("dice"))), ("HD95 (mm)", _pm(ev.get("hd95_mm"), 1)),
                ("ASSD (mm)", _pm(ev.get("assd_mm"), 2)),
                ("volume, automated / reference (mL)", f"{_pm(vol.get('auto_ml'), 0)} / {_pm(vol.get('ref_ml'), 0)}")]
        if vol.get("icc") is not None:
            low, high = vol.get("icc_ci95") or [None, None]
            rows.append(("volume ICC", f"{vol['icc']:.3f} (ICC(2,1), absolute agreement; 95 % CI {low} to {high})"))
        if ba:
            rows.append(("volume bias (mL)", f"{ba['bias']:+.0f} (95 % limits of agreement {ba['loa'][0]:+.0f} to "
                                              f"{ba['loa'][1]:+.0f})"))
        if rad:
            below = [name.removeprefix("original_") for name in rad.get("below_threshold") or []]
            rows.append(("radiomics ICC", f"{_pm({'mean': rad.get('icc_mean'), 'sd': rad.get('icc_sd')})} over "
                                          f"{rad.get('n_defined')} features"
                                          + (f" and {rad['n_cases']} cases" if rad.get("n_cases") else "")
                                          + f"; {len(below)} below {rad.get('threshold')}"
                                          + (f": {', '.join(below)}" if below else "")))
        if "plausibility_warnings" in ev:
            flagged = ev["plausibility_warnings"]
            rows.append(("plausibility warnings", f"{len(flagged)} of {ev.get('n_cases')} masks flagged"
                                                  + (f" (cases {', '.join(flagged)})" if flagged else "")))
        lines += ["Out-of-fold masks through `livervolumetry-train evaluate` (native grid):", "", _table(rows), ""]
    return lines


def write_model_card(bundle_dir: str | Path, notes: str = "") -> Path:
    """Write ``MODEL.md`` beside ``model.json``."""
    bundle_dir = Path(bundle_dir)
    spec = json.loads((bundle_dir / "model.json").read_text(encoding="utf-8"))
    path = bundle_dir / "MODEL.md"
    write_text_atomic(path, render(spec, notes=notes))
    return path
