"""Tables of benchmark rows: a per-input summary (engine vs reference) and all stages."""

from __future__ import annotations

import csv
import datetime
import math
from pathlib import Path


def _fmt(value, digits: int = 2) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def summary(rows: list[dict]) -> list[dict]:
    """One line per input: engine and reference side by side, and the speed-up."""
    by_input: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_input.setdefault(row["input"], {})[row["pipeline"]] = row
    lines = []
    for name, runs in by_input.items():
        engine, radiomics, reference = runs.get("engine"), runs.get("engine+radiomics"), runs.get("reference")
        any_row = engine or radiomics or reference
        line = {"input": name, "size": any_row["size"]}
        if engine:
            line.update({"engine_s": engine["median_s"], "engine_cold_s": engine["cold_s"],
                         "engine_peak_mb": engine["peak_mb"], "engine_dice": engine["dice"]})
        if radiomics:
            line["engine+radiomics_s"] = radiomics["median_s"]
        if reference:
            line.update({"reference_s": reference["median_s"], "reference_cold_s": reference["cold_s"],
                         "reference_peak_mb": reference["peak_mb"], "reference_dice": reference["dice"]})
        if engine and reference:
            line["speed_up"] = reference["median_s"] / engine["median_s"]
            line["speed_up_cold"] = reference["cold_s"] / engine["cold_s"]
        lines.append(line)
    return lines


_SUMMARY_COLUMNS = [
    ("input", "input"), ("size", "voxels"), ("engine_s", "engine s"), ("engine+radiomics_s", "+radiomics s"),
    ("reference_s", "reference s"), ("speed_up", "speed-up"), ("engine_cold_s", "engine cold s"),
    ("reference_cold_s", "reference cold s"), ("speed_up_cold", "speed-up cold"),
    ("engine_peak_mb", "engine peak MB"), ("reference_peak_mb", "reference peak MB"),
    ("engine_dice", "engine Dice"), ("reference_dice", "reference Dice"),
]


def markdown_summary(rows: list[dict], machine: str) -> str:
    lines = summary(rows)
    columns = [(key, title) for key, title in _SUMMARY_COLUMNS if any(key in line for line in lines)]
    out = [f"Machine: {machine}. Date: {datetime.date.today().isoformat()}.", "",
           "| " + " | ".join(title for _, title in columns) + " |",
           "| " + " | ".join("---" if key in ("input", "size") else "---:" for key, _ in columns) + " |"]
    for line in lines:
        cells = []
        for key, _ in columns:
            value = line.get(key, "")
            digits = 0 if key.endswith("_mb") else 3 if key.endswith("dice") else 1 if key.startswith("speed") else 2
            text = _fmt(value, digits)
            cells.append(text + ("x" if key.startswith("speed") and text not in ("", "n/a") else ""))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def markdown_stages(rows: list[dict]) -> str:
    stages = sorted({k for row in rows for k in row if k.endswith("_s") and k not in
                     ("median_s", "cold_s", "process_s")})
    header = ["input", "pipeline", "weights", "median s", *[s[:-2] for s in stages], "peak MB", "Dice"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["input"], row["pipeline"], row["weights"], _fmt(row["median_s"]),
                 *[_fmt(row.get(s, float("nan"))) if s in row else "" for s in stages],
                 _fmt(row["peak_mb"], 0), _fmt(row["dice"], 3)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def print_table(rows: list[dict], machine: str) -> None:
    print()
    print(markdown_summary(rows, machine))


def write_results(rows: list[dict], machine: str, out_dir: Path) -> None:
    """``benchmark.csv`` (every row and stage) and ``benchmark.md`` (summary + stages)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(out_dir / "benchmark.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    text = ("# LiverVolumetry benchmark\n\n" + markdown_summary(rows, machine) +
            "\nMedian of the runs in one process; cold = interpreter start, imports and the first run. "
            "Dice against the real label or the phantom's truth; n/a = untrained reference weights.\n\n"
            "## Stages (median seconds)\n\n" + markdown_stages(rows))
    (out_dir / "benchmark.md").write_text(text, encoding="utf-8")
    print(f"wrote {out_dir / 'benchmark.csv'} and {out_dir / 'benchmark.md'}")
