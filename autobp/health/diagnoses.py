"""The judgement: every layer's verdict and every diagnosis, the cause first, and which diagnoses are fatal."""

from __future__ import annotations

from pathlib import Path

from autobp.health.course import loss_course
from autobp.health.findings import AT_START, LATER
from autobp.health.fit_diagnoses import not_converged, overfitting, underfitting
from autobp.health.instruments import instrument_rate_evidence, instrument_verdicts, noise_swings
from autobp.health.layer_diagnoses import (
    exploding_from_start, first_blow_up, inactive_findings, init_scale, signal_findings,
)
from autobp.health.layers import LayerSummary, layer_verdicts, summarize_layers
from autobp.health.rate_diagnoses import gradient_noise, rate_high, rate_low
from autobp.health.thresholds import FAR_OFF, FATAL_KINDS, UPDATE_RATIO_HIGH, UPDATE_RATIO_LOW
from autobp.rundir.reader import RunLog, read_run
from autobp.rundir.summary import Diagnosis, Health, InstrumentVerdict, LayerVerdict


def judge(log: RunLog, layers: list[LayerSummary] | None = None) -> Health:
    """The run's gradient health: one verdict per layer and every diagnosis, the cause first."""
    layers = summarize_layers(log) if layers is None else layers
    verdicts = layer_verdicts(layers)
    instruments = instrument_verdicts(log)
    return Health(layers=verdicts, diagnoses=diagnose(log, layers, verdicts, instruments), instruments=instruments)


def fatal_cause(run_dir: Path) -> Diagnosis | None:
    """The cause (first diagnosis) of the run's judgement from its files so far, if it is fatal."""
    diagnoses = judge(read_run(run_dir)).diagnoses
    return diagnoses[0] if diagnoses and is_fatal(diagnoses[0]) else None


def is_fatal(diagnosis: Diagnosis) -> bool:
    """Whether a diagnosis is a reason to give up on a run: one of FATAL_KINDS, a learning rate FAR_OFF."""
    if diagnosis.kind not in FATAL_KINDS:
        return False
    evidence = diagnosis.evidence
    ratio = evidence.get("update_ratio_median")
    if diagnosis.kind == "learning_rate_high":
        # A single step larger than the weights, a loss that climbs or swings, layers the steps broke.
        beside = {"update_ratio_max", "lowest_train_loss", "unstable", "appeared_later"} & evidence.keys()
        return bool(beside) or ratio is not None and ratio >= FAR_OFF * UPDATE_RATIO_HIGH
    if diagnosis.kind == "learning_rate_low":
        return ratio is not None and ratio * FAR_OFF <= UPDATE_RATIO_LOW
    return True


def diagnose(log: RunLog, layers: list[LayerSummary], verdicts: list[LayerVerdict],
             instruments: list[InstrumentVerdict] | None = None) -> list[Diagnosis]:  # fmt: skip
    """Every diagnosis the logs trigger, the cause first; empty for a healthy run.

    A problem present from the first logged step is the initialisation's (or the data's); vanishing, exploding,
    saturated or dead layers that appear only later, or a blow-up after a finite start, are the steps' doing: a
    learning rate too high. The fit (a too-low rate, under- or overfitting, not converged) is judged only where no
    such problem is found, and a rate is never called too low while the loss climbs or swings (or the instruments
    call it too high). The instruments, where logged, add their step quality and curvature to the learning-rate
    evidence and decide gradient_noise."""
    instruments = instrument_verdicts(log) if instruments is None else instruments
    rate_evidence = instrument_rate_evidence(instruments)
    course = loss_course(log)
    config = log.config
    # Dead or saturated units explain a vanishing signal, not the other way round: they are listed first.
    blow_up = first_blow_up(log, layers)
    found = [*exploding_from_start(blow_up, config), *init_scale(layers, config), *inactive_findings(layers, config)]
    found += signal_findings(layers, verdicts, config, "vanishing")
    found += signal_findings(layers, verdicts, config, "exploding")
    started_sick = any(finding.rank == AT_START for finding in found)
    later = [] if started_sick else [finding for finding in found if finding.rank == LATER]
    found += rate_high(layers, course, config, later, rate_evidence,
                       blow_up if blow_up is not None and not blow_up.at_start else None, noise_swings(instruments))
    found += gradient_noise(log, instruments, course, found)
    if not found:
        found += rate_low(log, layers, course, config, rate_evidence)
    if course is not None and not found:
        found += overfitting(log, config)
        if not (log.summary and log.summary.early_stopping):  # stopped on purpose: neither too small nor too short
            found += underfitting(log, course, config) or not_converged(log, course, config)
    ordered = sorted(found, key=lambda finding: finding.rank)
    kinds = [finding.diagnosis.kind for finding in ordered]
    return [f.diagnosis for index, f in enumerate(ordered) if f.diagnosis.kind not in kinds[:index]]
