"""The one gradient-health judgement: per-layer verdicts and run-level diagnoses from a run's logs.

`train` prints it at the end of a run and stores it in summary.json; `report`, `compare` and sweeps read the same
judgement, made by this package from the same files, so every output agrees. Every threshold lives in `thresholds`.

Each diagnosis names a cause and carries `fix`, the config change to try first (dotted keys to values, exactly what
`--set` takes, valid for the run's own config.yaml), and `alternatives`; its prose `suggestion` is written from them.
Causes come before their symptoms: a problem already present at the first logged step comes from the
initialisation or the data, one that appears later while the loss climbs or swings comes from the optimizer.

Read in this order: `thresholds`, `layers` (each layer's summary and verdict), `course` (what the loss did),
`remedies` (the changes proposed), `instruments` (instruments.csv's verdicts), `findings`, the diagnoses of the
layers, the optimizer and the fit (`layer_diagnoses`, `rate_diagnoses`, `fit_diagnoses`), and `diagnoses` (the
judgement that orders them).
"""

from autobp.health.diagnoses import diagnose, fatal_cause, is_fatal, judge
from autobp.health.instruments import instrument_bands
from autobp.health.layers import LayerSummary, describe, summarize_layers
from autobp.health.remedies import describe_change

__all__ = ["LayerSummary", "describe", "describe_change", "diagnose", "fatal_cause", "instrument_bands", "is_fatal",
           "judge", "summarize_layers"]  # fmt: skip
