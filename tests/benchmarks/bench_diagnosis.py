"""How far the diagnoses can be trusted, measured on the labelled corpus of faults in tests/benchmarks/faults/.

    python tests/benchmarks/bench_diagnosis.py [--jobs N] [--only NAME,...] [--verbose]

Every case of faults/labels.yaml is a config with one deliberate fault, labelled by hand with its cause, the
textbook fix of that cause and the metric its repaired run must reach (or a healthy control: `cause: healthy`).
Each sick config is trained; then, from the run's own config.yaml, once with the label's textbook fix (the check
of the label: it must reach the target while the sick run does not) and once with the `fix` of the run's first
diagnosis (the repair). Printed per kind and in total:

- detection: the labelled cause is the first diagnosis;
- false alarms: a healthy control gets any diagnosis;
- repair: the first diagnosis's fix reaches the target and the cause is no longer first.

The cases marked `held_out` were added after the judgement's thresholds were last changed, and are also counted on
their own: the others are the cases the thresholds were calibrated on.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autobp.rundir import layout as rundir
from autobp.rundir.summary import Summary
from autobp.config.catalog import lower_is_better
from autobp.config.configfile import load_config
from autobp.config.overrides import override_arguments
from autobp.training.entry import train

FAULTS = Path(__file__).resolve().parent / "faults"
LABELS = FAULTS / "labels.yaml"
HEALTHY = "healthy"


@dataclass
class Outcome:
    """One training of a case: the metric its saved model reached and its diagnoses' kinds, first first."""

    value: float | None
    kinds: list[str]
    fix: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    name: str
    cause: str
    sick: Outcome
    textbook: Outcome | None = None
    repair: Outcome | None = None


def load_labels() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(LABELS.read_text())


def reached(value: float | None, label: dict[str, Any]) -> bool:
    """Whether a run's value of the label's metric reaches its target (a diverged run reaches nothing)."""
    if value is None or value != value:
        return False
    return value <= label["target"] if lower_is_better(label["metric"]) else value >= label["target"]


def outcome(summary: Summary, metric: str) -> Outcome:
    diagnoses = summary.health.diagnoses if summary.health else []
    value = summary.saved.get(metric)
    return Outcome(None if value is None else float(value), [d.kind for d in diagnoses],
                   diagnoses[0].fix if diagnoses else {})  # fmt: skip


def retrain(run_dir: Path, change: dict[str, Any], output: Path, metric: str) -> Outcome:
    """The run's own config.yaml trained again with `change`, exactly as `--set` would apply it."""
    config = load_config(run_dir / rundir.CONFIG_FILE, override_arguments(change))
    return outcome(train(config, output=output).summary, metric)


def run_case(name: str) -> CaseResult:
    with tempfile.TemporaryDirectory(prefix="autobp-faults-") as folder:
        return train_case(name, Path(folder))


def train_case(name: str, output: Path) -> CaseResult:
    """The case's sick run, then (for a fault) its textbook fix and its first diagnosis's fix, all under `output`."""
    label = load_labels()[name]
    sick = train(FAULTS / f"{name}.yaml", output=output)
    result = CaseResult(name, label["cause"], outcome(sick.summary, label["metric"]))
    if label["cause"] != HEALTHY:
        result.textbook = retrain(sick.run_dir, label["textbook"], output, label["metric"])
        if result.sick.fix:
            result.repair = retrain(sick.run_dir, result.sick.fix, output, label["metric"])
    return result


def detected(result: CaseResult) -> bool:
    return bool(result.sick.kinds) and result.sick.kinds[0] == result.cause


def repaired(result: CaseResult, label: dict[str, Any]) -> bool:
    repair = result.repair
    return (repair is not None and reached(repair.value, label)
            and (not repair.kinds or repair.kinds[0] != result.cause))  # fmt: skip


def label_holds(result: CaseResult, label: dict[str, Any]) -> bool:
    """The textbook fix reaches the target and the sick run does not."""
    return result.textbook is not None and reached(result.textbook.value, label) and not reached(result.sick.value, label)


def share(hits: int, total: int) -> str:
    return f"{hits}/{total} ({hits / total:.0%})" if total else "-"


def table(results: list[CaseResult], labels: dict[str, dict[str, Any]]) -> str:
    """Per kind and in total: cases, detection, repair and labels confirmed; then the controls' false alarms."""
    kinds = sorted({r.cause for r in results if r.cause != HEALTHY})
    rows = [("cause", "cases", "detected (first)", "repaired by its fix", "label checked")]
    sick = [r for r in results if r.cause != HEALTHY]
    for kind in [*kinds, "total"]:
        group = sick if kind == "total" else [r for r in sick if r.cause == kind]
        rows.append((kind, str(len(group)), share(sum(map(detected, group)), len(group)),
                     share(sum(repaired(r, labels[r.name]) for r in group), len(group)),
                     share(sum(label_holds(r, labels[r.name]) for r in group), len(group))))  # fmt: skip
    held = [r for r in sick if labels[r.name].get("held_out")]
    if held:
        rows.append(("held out", str(len(held)), share(sum(map(detected, held)), len(held)),
                     share(sum(repaired(r, labels[r.name]) for r in held), len(held)),
                     share(sum(label_holds(r, labels[r.name]) for r in held), len(held))))  # fmt: skip
    controls = [r for r in results if r.cause == HEALTHY]
    alarms = [r for r in controls if r.sick.kinds]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append(f"healthy controls: {len(controls)}, false alarms: {share(len(alarms), len(controls))}"
                 + "".join(f"\n  {r.name}: {', '.join(r.sick.kinds)}" for r in alarms))  # fmt: skip
    return "\n".join(lines)


def details(result: CaseResult, label: dict[str, Any]) -> str:
    def show(o: Outcome | None) -> str:
        if o is None:
            return "-"
        value = "-" if o.value is None else f"{o.value:.3g}"
        return f"{value} [{', '.join(o.kinds) or 'healthy'}]"

    marks = "".join((
        "D" if result.cause == HEALTHY or detected(result) else ".",
        "R" if result.cause == HEALTHY or repaired(result, label) else ".",
        "L" if result.cause == HEALTHY or label_holds(result, label) else ".",
    ))  # fmt: skip
    return (f"{marks} {result.name:<28} {result.cause:<20} {label['metric']} target {label['target']}: "
            f"sick {show(result.sick)}; textbook {show(result.textbook)}; repair {show(result.repair)} "
            f"with {override_arguments(result.sick.fix)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--verbose", action="store_true", help="one line per case: values and diagnoses")
    args = parser.parse_args()
    labels = load_labels()
    names = args.only.split(",") if args.only else list(labels)
    unknown = [name for name in names if name not in labels]
    if unknown:
        sys.exit(f"unknown case(s): {', '.join(unknown)}")
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run_case, names, chunksize=1)
    if args.verbose:
        print("\n".join(details(result, labels[result.name]) for result in results), end="\n\n")
    print(table(results, labels))


if __name__ == "__main__":
    main()
