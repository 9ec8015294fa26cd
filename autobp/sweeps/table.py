"""The ranked table of a sweep, as `autobp sweep` prints it: the trials best first, then the best trial's config.

    print(format_ranking(run_sweep(["configs/sweep_spirals.yaml"])))
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from autobp.common.text import format_number, format_table
from autobp.rundir import layout as rundir
from autobp.rundir.status import Status
from autobp.sweeps.record import Outcome, SweepRecord, TrialsCsv, best_column

if TYPE_CHECKING:  # the plan and the run show their trials with `cell`: they import this module
    from autobp.sweeps.plan import Sweep
    from autobp.sweeps.run import SweepResult

RANK = "rank"  # the ranked table's first column; the others are trials.csv's (see TrialsCsv)


def format_ranking(result: SweepResult) -> str:
    """The trials ranked best first, then the path of the best trial's config and the sweep directory."""
    sweep, outcomes = result.sweep, result.outcomes
    monitor = sweep.monitor
    statuses = ", ".join(f"{count} {status}" for status, count in Counter(o.status for o in outcomes).items())
    lines = [f"sweep {sweep.name}: {len(outcomes)} trials ({statuses}) in {result.seconds:.1f} s; "
             f"{sweep.ranking.describe()}", *([sweep.mix] if sweep.mix else [])]  # fmt: skip
    keys = sweep.keys
    rows = [[RANK, *TrialsCsv(keys, monitor).header(run_dir=False)]]
    ranking = result.ranking()
    for rank, index in zip(rank_labels(sweep, outcomes, ranking), ranking):
        trial, outcome = sweep.trials[index], outcomes[index]
        rows.append([
            rank, trial.name, outcome.status, *trial.values.values(), sweep.ranking.shown(outcome),
            outcome.best(monitor), outcome.epochs, outcome.seconds, outcome.reason,
        ])  # fmt: skip
    lines += format_table(rows[0], [[cell(value) for value in row] for row in rows[1:]])
    lines += pruned_notes(sweep, outcomes, ranking, [trial.name for trial in sweep.trials])
    best = best_text(sweep, outcomes)
    if best is None:
        lines.append(f"best: none — no trial completed with a {monitor}")
    else:
        config = result.directory / sweep.trials[ranking[0]].name / rundir.CONFIG_FILE
        lines.append(f"best: {best}, config {config}")
    lines.append(f"sweep directory: {result.directory}")
    return "\n".join(lines)


def rank_labels(sweep: Sweep | SweepRecord, outcomes: list[Outcome], ranking: list[int]) -> list[str]:
    """The rank column in table order: a ranked trial's place, `-` for the others, `-*` for a pruned trial whose
    best value beats the winner's (the `autobp sweep` table and the sweep's HTML page alike)."""
    beaten = _pruned_winners(sweep, outcomes, ranking)
    return [str(place) if sweep.ranking.value(outcomes[index]) is not None else "-*" if index in beaten else "-"
            for place, index in enumerate(ranking, start=1)]  # fmt: skip


def pruned_notes(
    sweep: Sweep | SweepRecord, outcomes: list[Outcome], ranking: list[int], names: list[str]
) -> list[str]:
    """The lines under a ranked table that say what its pruned trials show, and which of them beat the winner."""
    monitor = sweep.monitor
    lines = []
    if any(outcome.status == Status.PRUNED for outcome in outcomes):
        lines.append(f"pruned trials (rank -) show the {monitor} they last reported, at the epoch in `epochs`")
    for index in _pruned_winners(sweep, outcomes, ranking):
        outcome, winner = outcomes[index], outcomes[ranking[0]]
        lines.append(f"* {names[index]} was pruned at epoch {outcome.epochs}, but its {best_column(monitor)} "
                     f"{cell(outcome.best(monitor))} beats the winner's {monitor} {cell(sweep.ranking.value(winner))}"
                     f" ({names[ranking[0]]}): early_terminate stopped it before it could finish")  # fmt: skip
    return lines


def _pruned_winners(sweep: Sweep | SweepRecord, outcomes: list[Outcome], ranking: list[int]) -> list[int]:
    """Pruned trials, in table order, whose best value beats the value the winner is ranked by."""
    if not ranking:
        return []
    winner = sweep.ranking.value(outcomes[ranking[0]])
    return [
        index for index in ranking
        if winner is not None and outcomes[index].status == Status.PRUNED
        and (best := outcomes[index].best(sweep.monitor)) is not None and sweep.ranking.better(best, winner)
    ]  # fmt: skip


def best_text(sweep: Sweep, outcomes: list[Outcome]) -> str | None:
    """`val_loss 0.0123 (trial-004)` for the best trial so far, or None while no trial has completed."""
    best = sweep.ranking.order(outcomes)[0]
    value = sweep.ranking.value(outcomes[best])
    return None if value is None else f"{sweep.monitor} {cell(value)} ({sweep.trials[best].name})"


def cell(value: Any) -> str:
    """A value as the table shows it: numbers to 4 significant digits, lists as YAML writes them inline."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return format_number(value) if value is None or isinstance(value, float) else str(value)
