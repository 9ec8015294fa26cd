"""A finding: a diagnosis and its rank, the cause first; the wording the diagnoses share."""

from __future__ import annotations

from dataclasses import dataclass

from autobp.rundir.summary import Diagnosis

# Ranks, the cause first: what the initial weights or the data already show at the first logged step, then the
# optimizer (its learning rate, its batch), then problems that appear later without such a cause, then the fit.
AT_START, OPTIMIZER, LATER, NOISE, SLOW, FIT = range(6)


@dataclass
class Finding:
    rank: int
    diagnosis: Diagnosis


def listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
