"""Files written by ``livervolumetry-train evaluate`` (each atomically, into one folder).

* ``cases.csv``: one row per case: Dice, HD95 (mm), ASSD (mm), automated and reference
  volume and their difference (mL), group, source of the automated mask, seconds, and the
  engine's plausibility warnings on the automated mask.
* ``radiomics_icc.csv`` (with radiomics and enough cases for an ICC; otherwise an earlier
  run's is removed and the report says why): feature, ICC(2,1), its 95 % CI and case count.
* ``summary.json``: the aggregate figures (NaN written as null).
* ``report.md``: the human-readable report.
* ``bland_altman.png`` and ``dice.png``: small plots (matplotlib, Agg backend).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from pathlib import Path

from LiverVolumetryLib.atomic import atomic_path, write_text_atomic

from .agreement import ICC_FORM
from .evaluate import ICC_THRESHOLD, EvaluationResult, mean_sd

CASE_COLUMNS = ("case", "group", "dice", "hd95_mm", "assd_mm", "volume_auto_ml", "volume_ref_ml", "volume_diff_ml",
                "trained_on", "source", "seconds", "warnings")
#: Why a case has no HD95/ASSD (the reference mask is never empty: such cases are refused).
EMPTY_MASK = "left out: empty automated mask"
DEFINITIONS = (
    "Dice, HD95 and ASSD are computed on each image's native grid, in physical mm. Surface voxels have a face "
    "neighbour outside the mask. HD95 = max of the two directed 95th percentiles of surface distances; ASSD = "
    "mean of both directions' surface distances pooled. With an empty automated mask HD95/ASSD are undefined.",
    f"ICC = {ICC_FORM}.",
    "Bland-Altman differences are automated - reference; limits of agreement = bias +/- 1.96 SD.",
)


def _number(value: float, digits: int = 6) -> float | None:
    """``value`` rounded, or None when not finite (JSON null)."""
    return round(float(value), digits) if value is not None and math.isfinite(value) else None


def _cell(value: float, digits: int = 6) -> float | str:
    """A CSV number: ``value`` rounded, or 'nan' when not finite."""
    return round(float(value), digits) if math.isfinite(value) else "nan"


def _csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def cases_csv(result: EvaluationResult) -> str:
    """The per-case table as CSV text."""
    rows = [{"case": c.case, "group": c.group, "dice": _cell(c.dice), "hd95_mm": _cell(c.hd95_mm, 4),
             "assd_mm": _cell(c.assd_mm, 4), "volume_auto_ml": _cell(c.volume_auto_ml, 3),
             "volume_ref_ml": _cell(c.volume_ref_ml, 3), "volume_diff_ml": _cell(c.volume_diff_ml, 3),
             "trained_on": "yes" if c.trained_on else "", "source": c.source, "seconds": _cell(c.seconds, 2),
             "warnings": c.warnings}
            for c in result.cases]
    return _csv_text(rows, CASE_COLUMNS)


def radiomics_csv(result: EvaluationResult) -> str:
    """Feature ICCs as CSV text."""
    rows = [{"feature": f.feature, "icc": _cell(f.icc), "ci95_low": _cell(f.ci95_low, 2),
             "ci95_high": _cell(f.ci95_high, 2), "n": f.n}
            for f in result.feature_iccs]
    return _csv_text(rows, ("feature", "icc", "ci95_low", "ci95_high", "n"))


def _stats(values: list[float], digits: int = 4) -> dict:
    mean, sd, n = mean_sd(values)
    return {"mean": _number(mean, digits), "sd": _number(sd, digits), "n": n}


def summary(result: EvaluationResult) -> dict:
    """The aggregate figures (over :attr:`EvaluationResult.summary_cases`) as a JSON-ready dict."""
    cases = result.summary_cases
    trained = [c.case for c in result.cases if c.trained_on]
    icc, ba, mw = result.volume_icc, result.volume_agreement, result.mann_whitney
    finite = [f.icc for f in result.feature_iccs if math.isfinite(f.icc)]
    out = {
        "created": _dt.datetime.now().isoformat(timespec="seconds"), "automated": result.automated,
        "n_cases": len(result.cases), "seconds": _number(result.seconds, 1),
        "training_cases": trained, "summary_covers": _covers(result),
        "dice": {**_stats([c.dice for c in cases]), "min": _number(min((c.dice for c in cases), default=math.nan))},
        "hd95_mm": _stats([c.hd95_mm for c in cases], 3), "assd_mm": _stats([c.assd_mm for c in cases], 3),
        "volume": {
            "auto_ml": _stats([c.volume_auto_ml for c in cases], 2),
            "ref_ml": _stats([c.volume_ref_ml for c in cases], 2),
            "icc_form": ICC_FORM, "icc": _number(icc.icc, 4) if icc else None,
            "icc_ci95": [_number(icc.ci95_low, 2), _number(icc.ci95_high, 2)] if icc else None,
            "bland_altman": {"difference": "automated - reference (mL)", "bias": _number(ba.bias, 2),
                             "sd": _number(ba.sd, 2), "loa": [_number(ba.loa_low, 2), _number(ba.loa_high, 2)]}
            if ba else None},
        "radiomics": None,
        "mann_whitney_dice": {"test": "two-sided Mann-Whitney U", "groups": [mw.group_a, mw.group_b],
                              "n": [mw.n_a, mw.n_b], "median_dice": [_number(mw.median_a, 4), _number(mw.median_b, 4)],
                              "u": _number(mw.u, 3), "p": _number(mw.p_value, 6)} if mw else None,
        "plausibility_warnings": {c.case: c.warnings for c in result.cases if c.warnings},
        "notes": list(result.notes),
    }
    if result.radiomics:
        mean, sd, _ = mean_sd(finite)
        out["radiomics"] = {"icc_form": ICC_FORM, "n_features": len(result.feature_iccs), "n_defined": len(finite),
                            "n_cases": max((f.n for f in result.feature_iccs), default=0),
                            "icc_mean": _number(mean, 4), "icc_sd": _number(sd, 4), "threshold": ICC_THRESHOLD,
                            "below_threshold": [f.feature for f in result.features_below()]}
    return out


def _covers(result: EvaluationResult) -> str:
    """Which cases the summary figures cover, in words."""
    trained = sum(c.trained_on for c in result.cases)
    if not trained:
        return f"all {len(result.cases)} cases"
    if trained == len(result.cases):
        return f"all {trained} cases, every one a training case of the model (training-set figures, not validation)"
    return f"the {len(result.cases) - trained} held-out cases ({trained} training case(s) of the model left out)"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _md(text: object) -> str:
    """Text from a manifest (case, group) or the run, safe in a Markdown table or list: a
    '|' would split a table cell, '<' start raw HTML, a newline end the line."""
    return " ".join(str(text).split("\n")).replace("\\", "\\\\").replace("|", "\\|").replace(
        "<", "&lt;").replace(">", "&gt;")


def _mean_sd_text(values: list[float], digits: int, why: str = "undefined") -> str:
    """'mean ± SD', with the count it covers when some values are undefined (NaN)."""
    mean, sd, n = mean_sd(values)
    undefined = len(values) - n
    extra = f" (n = {n} of {len(values)}; {undefined} {why})" if undefined else ""
    return f"{_fmt(mean, digits)} ± {_fmt(sd, digits)}{extra}"


def report_markdown(result: EvaluationResult) -> str:
    """The report as Markdown text."""
    cases = result.cases
    lines = ["# Liver segmentation evaluation", "",
             f"- Automated masks: {_md(result.automated)}", f"- Cases: {len(cases)}",
             f"- Radiomics: {'on (engine pyradiomics settings)' if result.radiomics else 'off'}",
             f"- Wall time: {result.seconds:.1f} s", "",
             "## Per case", "",
             "| case | group | Dice | HD95 (mm) | ASSD (mm) | automated (mL) | reference (mL) | difference (mL) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        mark = " (training case)" if c.trained_on else ""
        lines.append(f"| {_md(c.case)}{mark} | {_md(c.group)} | {c.dice:.4f} | {_fmt(c.hd95_mm)} | {_fmt(c.assd_mm)} | "
                     f"{c.volume_auto_ml:.1f} | {c.volume_ref_ml:.1f} | {c.volume_diff_ml:+.1f} |")
    cases = result.summary_cases
    lines += ["", "## Segmentation (mean ± SD)", "", f"Summary figures (here and below) cover {_covers(result)}.", "",
              f"- Dice: {_mean_sd_text([c.dice for c in cases], 4)}",
              f"- HD95: {_mean_sd_text([c.hd95_mm for c in cases], 2, EMPTY_MASK)} mm",
              f"- ASSD: {_mean_sd_text([c.assd_mm for c in cases], 2, EMPTY_MASK)} mm", "", "## Volumetry", ""]
    icc, ba = result.volume_icc, result.volume_agreement
    lines.append(f"- Volume ICC: {_fmt(icc.icc, 4)} (95 % CI {_fmt(icc.ci95_low, 2)} to {_fmt(icc.ci95_high, 2)}, "
                 f"n = {icc.n}); {ICC_FORM}" if icc else "- Volume ICC: not computed (too few cases)")
    lines.append(f"- Bland-Altman (automated - reference): bias {ba.bias:+.1f} mL, SD {ba.sd:.1f} mL, 95 % limits "
                 f"of agreement {ba.loa_low:+.1f} to {ba.loa_high:+.1f} mL" if ba else
                 "- Bland-Altman: not computed (fewer than 2 cases)")
    if result.radiomics:
        lines += ["", "## Radiomics agreement (automated vs reference mask)", ""]
        finite = [f.icc for f in result.feature_iccs if math.isfinite(f.icc)]
        below = result.features_below()
        if result.feature_iccs:
            lines += [f"- Feature ICC(2,1), mean ± SD: {_mean_sd_text(finite, 3)} over {len(finite)} feature(s)",
                      f"- Features with ICC < {ICC_THRESHOLD}: {len(below)}"]
            lines += [f"  - {f.feature}: {f.icc:.3f}" for f in sorted(below, key=lambda f: f.icc)]
        else:
            lines.append("- Not computed (too few cases with features)")
    flagged = [c for c in result.cases if c.warnings]
    lines += ["", "## Plausibility warnings on the automated masks", "",
              f"- {len(flagged)} of {len(result.cases)} case(s) flagged" + (":" if flagged else "")]
    lines += [f"  - {_md(c.case)} (Dice {c.dice:.4f}): {_md(c.warnings)}" for c in flagged]
    mw = result.mann_whitney
    if mw:
        lines += ["", "## Dice between groups", "",
                  f"- Two-sided Mann-Whitney U: {_md(mw.group_a)} (n = {mw.n_a}, median {mw.median_a:.4f}) vs "
                  f"{_md(mw.group_b)} (n = {mw.n_b}, median {mw.median_b:.4f}): U = {mw.u:.1f}, p = {mw.p_value:.4g}"]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {_md(note)}" for note in result.notes]
    lines += ["", "## Definitions", ""] + [f"- {text}" for text in DEFINITIONS]
    return "\n".join(lines) + "\n"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png")
    return buffer.getvalue()


def render_plots(result: EvaluationResult) -> dict[str, bytes]:
    """``bland_altman.png`` (difference vs mean volume) and ``dice.png`` (Dice per case), as
    PNG bytes: rendered before any file is written, so a plot that fails leaves no report."""
    # Figure without pyplot: no global state and no GUI backend; PNGs are rendered by Agg.
    from matplotlib.figure import Figure

    cases, ba = result.summary_cases, result.volume_agreement  # the cases the limits are computed from
    figure = Figure(figsize=(5, 3.6))
    axes = figure.subplots()
    means = [(c.volume_auto_ml + c.volume_ref_ml) / 2 for c in cases]
    axes.scatter(means, [c.volume_diff_ml for c in cases], s=16, color="tab:blue")
    if ba:
        for value, style in ((ba.bias, "-"), (ba.loa_low, "--"), (ba.loa_high, "--")):
            axes.axhline(value, color="tab:red", linestyle=style, linewidth=1)
    axes.set(xlabel="mean of automated and reference volume (mL)", ylabel="automated - reference (mL)",
             title="Bland-Altman: liver volume")
    figure.tight_layout()
    plots = {"bland_altman.png": _png(figure)}
    cases = result.cases
    figure = Figure(figsize=(max(4.0, 0.3 * len(cases) + 1.5), 3.4))
    axes = figure.subplots()
    groups = sorted({c.group for c in cases})
    colors = [f"C{groups.index(c.group) % 10}" for c in cases]
    bars = axes.bar(range(len(cases)), [c.dice for c in cases], color=colors)
    for bar, case in zip(bars, cases):
        if case.trained_on:  # not in the summary figures
            bar.set(hatch="//", edgecolor="black", alpha=0.5)
    # '$' would start matplotlib's mathtext: a name like "a$b" failed the whole report.
    axes.set_xticks(range(len(cases)), [c.case.replace("$", r"\$") for c in cases], rotation=90, fontsize=7)
    notes = [text for text, shown in (("colour = group", len(groups) > 1),
                                      ("hatched = training case", any(c.trained_on for c in cases))) if shown]
    axes.set(ylim=(0, 1), ylabel="Dice", title="Dice per case" + (f" ({'; '.join(notes)})" if notes else ""))
    figure.tight_layout()
    plots["dice.png"] = _png(figure)
    return plots


#: Every file :func:`write_report` may write.
REPORT_FILES = ("cases.csv", "radiomics_icc.csv", "summary.json", "report.md", "bland_altman.png", "dice.png")


def write_report(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write every output file into ``out_dir`` (created if needed); return their paths."""
    out_dir = Path(out_dir)
    texts = {"cases.csv": cases_csv(result)}
    if result.feature_iccs:  # none without radiomics, or with too few cases (a header-only file)
        texts["radiomics_icc.csv"] = radiomics_csv(result)
    texts["summary.json"] = json.dumps(summary(result), indent=1, ensure_ascii=False) + "\n"
    texts["report.md"] = report_markdown(result)
    plots = render_plots(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not result.feature_iccs:
        (out_dir / "radiomics_icc.csv").unlink(missing_ok=True)  # an earlier run's would not match this report
    files = []
    for name, text in texts.items():
        write_text_atomic(out_dir / name, text)
        files.append(out_dir / name)
    for name, data in plots.items():
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(data)
        files.append(out_dir / name)
    return files
