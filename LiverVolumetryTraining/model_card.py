"""Render a bundle's ``MODEL.md`` from its ``model.json`` (numbers never typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from LiverVolumetryLib.atomic import write_text_atomic

CHAOS_CREDIT = (
    "CHAOS challenge training data (Kavur AE, et al. CHAOS Challenge - combined (CT-MR) healthy abdominal "
    "organ segmentation. Med Image Anal 2021;69:101950; data doi:10.5281/zenodo.3431873), MR T2-SPIR "
    "series with manual liver labels, licensed CC BY-SA 4.0. NIfTI conversion (1.25 x 1.25 x 7.7 mm) as "
    "published with Q-Net (Shen Q, et al., arXiv:2208.11451)."
)


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows]])


def _batch(recipe: dict) -> str:
    """How a training step's batch is drawn, in words."""
    if "volumes_per_batch" in recipe:  # epoch-based (volumetry-net)
        pos, neg = recipe.get("pos_neg", [1, 1])
        return (f"{recipe['volumes_per_batch']} volumes x {recipe.get('samples_per_volume')} patches per step, "
                f"positive:negative centres {pos}:{neg}")
    return f"batch {recipe.get('batch_size')}, positive fraction {recipe.get('positive_fraction')}"


def render(spec: dict, data_credit: str = CHAOS_CREDIT, notes: str = "") -> str:
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
        ]),
        "",
        "## Training",
        "",
        _table([
            ("data", data_credit),
            ("training cases", ", ".join(map(str, training.get("cases", [])))),
            ("synthetic phantoms", f"{training.get('phantoms', 0)} seeded phantoms "
                                   f"({', '.join(recipe.get('phantom_contrasts', ['t1_portal_venous']))}) "
                                   f"(`LiverVolumetryLib.phantom`), sampled in {recipe.get('phantom_fraction', 0):.0%} "
                                   "of patches"),
            ("recipe", f"`{recipe.get('name', 'liver-mri')}`: patches {recipe.get('patch_size')}, {_batch(recipe)}, "
                       f"loss {recipe.get('loss')}, {json.dumps(recipe.get('optimizer'))}, {recipe.get('schedule')} "
                       f"schedule, augmentation '{recipe.get('augmentation')}'"),
            ("iterations", f"{training.get('iterations')}"
                           + (f" ({training['epochs']} epochs)" if training.get("epochs") is not None else "")
                           + f" (checkpoint: {training.get('checkpoint')})"),
        ]),
        "",
        "## Validation",
        "",
        validation.get("protocol", "none recorded"),
        "",
    ]
    if per_case:
        lines += ["| case | Dice |", "| --- | --- |", *[f"| {c} | {d:.3f} |" for c, d in per_case.items()],
                  f"| **mean ± SD** | **{validation['dice_mean']:.3f} ± {validation.get('dice_sd') or 0:.3f}** |", ""]
    if notes:
        lines += [notes.strip(), ""]
    return "\n".join(lines)


def write_model_card(bundle_dir: str | Path, notes: str = "") -> Path:
    """Write ``MODEL.md`` beside ``model.json``."""
    bundle_dir = Path(bundle_dir)
    spec = json.loads((bundle_dir / "model.json").read_text(encoding="utf-8"))
    path = bundle_dir / "MODEL.md"
    write_text_atomic(path, render(spec, notes=notes))
    return path
