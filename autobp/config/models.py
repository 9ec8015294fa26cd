"""The config file format: pydantic models for every section, with defaults and cross-field checks.

Every model forbids unknown keys and validates strictly (no bool where a number is expected, no silent
string-to-number conversion), because a config that quietly means something else is worse than an error.
Checks that involve several keys report every problem at once through `raise_problems`.

Sizes have upper bounds so that a typo such as `n_samples: 10000000000` is an error naming the limit rather than
an attempt to allocate terabytes: at most 10,000,000 examples (and batch size), 100,000 units per layer or
synthetic features or outputs or classes, 1,000 layers, 100,000,000 synthetic data values, 10**9 epochs and
10,000,000 parameters (checked by `autobp.model.prepare.resolve_config`, as the input width comes from the data).
Paths are at most 4,096 characters, column names 1,000.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, GetCoreSchemaHandler, ValidationInfo, field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from autobp.config import catalog
from autobp.config.catalog import Task, task_of_loss


class CatalogName:
    """A config value that names an entry of a catalog table: checked against the table as it is when a config is
    read, so an entry added to it later is allowed; listed as the allowed values (JSON Schema enum, problems)."""

    def __init__(self, table: Mapping[str, object]) -> None:
        self.table = table

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self._check)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Any) -> dict[str, Any]:
        return {"enum": list(self.table), "type": "string"}

    def _check(self, value: Any) -> str:
        if isinstance(value, str) and value in self.table:
            return value
        expected = ", ".join(map(repr, self.table))
        raise PydanticCustomError("literal_error", "Input should be one of {expected}", {"expected": expected})


# The allowed names come from the catalog, which owns what each name means.
Activation = Annotated[str, CatalogName(catalog.ACTIVATIONS)]
Init = Annotated[str, CatalogName(catalog.INITS)]
LossName = Annotated[str, CatalogName(catalog.LOSSES)]
OptimizerName = Annotated[str, CatalogName(catalog.OPTIMIZERS)]
Monitor = Literal[catalog.MONITORS]
SourceName = Annotated[str, CatalogName(catalog.SOURCES)]
SHUFFLE_WINDOW = 65_536  # rows per window of data.shuffle: window unless data.shuffle_window says otherwise

NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"
# Keys whose values are file paths: relative to the config file's folder when written in a config, to the current
# folder when given with --set; shipped to Dask workers with the trial.
FILE_PATH_KEYS = (("data", "path"), ("data", "target_path"), ("model", "init_from"))

MAX_SAMPLES = 10_000_000
MAX_WIDTH = 100_000  # units of a layer; features, outputs and classes of synthetic data
MAX_LAYERS = 1_000
MAX_DATA_VALUES = 100_000_000  # synthetic examples times (features + outputs): 800 MB in float64
MAX_EPOCHS = 10**9
MAX_PARAMETERS = 10_000_000  # weights and biases: 80 MB each for them, their gradients and optimizer moments
MAX_PATH = 4096  # PATH_MAX on Linux
MAX_COLUMN_NAME = 1_000

PositiveInt = Annotated[int, Field(ge=1)]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("a NUL character is not allowed in a path")
    return text


def _is_column_name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_COLUMN_NAME


PathText = Annotated[str, Field(min_length=1, max_length=MAX_PATH), AfterValidator(_no_nul)]
ColumnName = Annotated[str, Field(min_length=1, max_length=MAX_COLUMN_NAME)]


def check_name(name: str) -> str:
    """A run or sweep name must make a plain folder name (so `../x` cannot leave the output directory)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError("use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")
    return name


# The pydantic error type of those checks; its context holds the list of (key path, message) problems.
CROSS_FIELD_ERROR = "cross_field"


def raise_problems(*problems: tuple[tuple[str | int, ...], str]) -> None:
    """Raise one pydantic error carrying every (relative key path, message) problem found by a model check.

    A model validator can raise only one error; packing the problems into its context lets the config
    loader report each at its own key and line.
    """
    if not problems:
        return
    summary = "; ".join(".".join(map(str, path)) + ": " + message for path, message in problems)
    raise PydanticCustomError(CROSS_FIELD_ERROR, "{summary}", {"summary": summary, "problems": list(problems)})


class _Section(BaseModel):
    # The docstring under each field describes it in `autobp schema`, which reads them itself (see
    # schema.config_json_schema): pydantic's use_attribute_docstrings would parse them on every start-up.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)


class DataConfig(_Section):
    """Where the examples come from. Synthetic sources fill their omitted parameters with documented defaults."""

    source: SourceName
    """Built in: xor, moons, circles, spirals, blobs, sine, linear; from a file: csv, npz, npy (memory-mapped)."""
    n_samples: Annotated[int, Field(ge=4, le=MAX_SAMPLES)] | None = None
    """Synthetic sources: number of examples."""
    noise: NonNegativeFloat | None = None
    """Synthetic sources: std of the Gaussian noise on each input (blobs: cluster std; sine, linear: on the target)."""
    n_classes: Annotated[int, Field(ge=2, le=MAX_WIDTH)] | None = None
    """spirals (arms, default 2) and blobs (clusters, default 3)."""
    n_features: Width | None = None
    """blobs and linear: input dimension."""
    n_outputs: Width | None = None
    """linear: number of regression targets."""
    path: PathText | None = None
    """csv and npz: the data file; npy: the features (n, d), memory-mapped; relative to the config file's folder."""
    target_path: PathText | None = None
    """npy: the targets (n,) or (n, k), one row per row of the features; relative to the config file's folder."""
    target: ColumnName | Annotated[list[ColumnName], Field(min_length=1)] | None = None
    """csv: target column name (a list of names = multi-output regression); default the last column."""
    features: Annotated[list[ColumnName], Field(min_length=1)] | None = None
    """csv: feature column names; default all columns except the target."""
    task: Literal["auto", "classification", "regression"] = "auto"
    """auto = implied by the loss (cross_entropy and bce classify, the others regress)."""
    val_fraction: Annotated[float, Field(ge=0, le=0.9)] = 0.2
    """Share of examples held out for validation (seeded, stratified for classification); 0 = none."""
    standardize: bool = True
    """Standardize features (and regression targets) with training-split statistics."""
    shuffle: Literal["exact", "window"] = "exact"
    """Each epoch's order: exact = a permutation of all training rows; window = windows of data.shuffle_window
    contiguous rows in a shuffled order, each shuffled within itself (for disks that are slow at random reads)."""
    shuffle_window: Annotated[int, Field(ge=2)] | None = None
    """shuffle: window: rows per window (default 65,536)."""

    @field_validator("target", mode="before")
    @classmethod
    def _check_target(cls, value: object) -> object:
        # One clear message instead of one per member of the `str | list[str]` union.
        names = [value] if isinstance(value, str) else value
        if value is None or (isinstance(names, list) and names and all(map(_is_column_name, names))):
            return value
        raise ValueError(
            f"expected a column name or a non-empty list of column names (each 1 to {MAX_COLUMN_NAME:,} characters)"
        )

    @model_validator(mode="after")
    def _check_source_keys(self) -> DataConfig:
        source = catalog.SOURCES[self.source]
        problems = [
            ((key,), f"not used with data.source '{self.source}' (it takes: {', '.join(source.keys)})")
            for key in catalog.SOURCE_KEYS
            if getattr(self, key) is not None and key not in source.keys
        ]
        problems += [
            ((key,), f"required with data.source '{self.source}' ({what})")
            for key, what in source.required.items()
            if getattr(self, key) is None
        ]
        targets = [self.target] if isinstance(self.target, str) else self.target or []
        problems += [
            (("features",), f"'{name}' is also in data.target")
            for name in targets
            if name in (self.features or [])
        ]
        problems += [
            ((key,), f"'{name}' is listed twice")
            for key, names in (("target", targets), ("features", self.features or []))
            for name, count in Counter(names).items()
            if count > 1
        ]
        if self.shuffle == "exact" and self.shuffle_window is not None:
            problems.append((("shuffle_window",), "only used with data.shuffle: window"))
        raise_problems(*problems)
        if self.shuffle == "window" and self.shuffle_window is None:
            self.shuffle_window = SHUFFLE_WINDOW
        for key, default in source.defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, default)
        raise_problems(*self._size_problems())
        return self

    def _size_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Synthetic data that would not fit in memory; every source but blobs and linear has 2 features at most."""
        if not catalog.SOURCES[self.source].synthetic:
            return []
        if self.n_classes is not None and self.n_classes > self.n_samples:
            message = f"{self.n_classes:,} classes need as many examples, but data.n_samples is {self.n_samples:,}"
            return [(("n_classes",), message)]
        values = self.n_samples * ((self.n_features or 2) + (self.n_outputs or 1))
        if values > MAX_DATA_VALUES:
            message = (f"n_samples × (n_features + n_outputs) is {values:,} values, more than the limit of "
                       f"{MAX_DATA_VALUES:,} — use fewer examples or features")  # fmt: skip
            return [(("n_samples",), message)]
        return []


class LayerConfig(_Section):
    """One layer f = activation(f_prev W + b)."""

    units: Width | None = None
    """Output width; may be omitted on the last layer only (inferred from the data)."""
    activation: Activation | None = None
    """Default: model.activation for hidden layers, identity for the output layer."""
    dropout: Fraction = 0.0
    """Inverted dropout on this layer's output, training only."""
    init: Init | None = None
    """Weight initialisation; default model.init. Biases start at zero."""


class ModelConfig(_Section):
    """The network: an explicit list of layers, or the `hidden` shorthand."""

    layers: Annotated[list[LayerConfig], Field(min_length=1, max_length=MAX_LAYERS)] | None = None
    """Layers in order; the last is the output layer."""
    hidden: Annotated[list[Width], Field(max_length=MAX_LAYERS - 1)] | None = None
    """Shorthand for layers: hidden widths, then an identity output layer sized from the data."""
    init: Init = "xavier"
    """Default weight initialisation of every layer."""
    init_scale: PositiveFloat = 0.1
    """Std of `normal`, half-width of `uniform` initialisation."""
    activation: Activation = "tanh"
    """Default activation of hidden layers."""
    init_from: PathText | None = None
    """A model.npz, or a run directory (its model.npz), to start from; relative to the config file's folder."""
    dropout: Fraction = 0.0
    """Default inverted dropout of the hidden layers (a layer's own `dropout` takes precedence)."""

    @model_validator(mode="after")
    def _expand_layers(self) -> ModelConfig:
        raise_problems(*self._choice_problems())
        layers = self.layers or [LayerConfig(units=units) for units in self.hidden] + [LayerConfig()]
        raise_problems(*(
            (("layers", index, "units"), "required on hidden layers (only the last layer's comes from the data)")
            for index, layer in enumerate(layers[:-1])
            if layer.units is None
        ))
        last = len(layers) - 1
        self.layers = [
            layer.model_copy(update={
                "activation": layer.activation or ("identity" if index == last else self.activation),
                "init": layer.init or self.init,
                "dropout": layer.dropout if "dropout" in layer.model_fields_set or index == last else self.dropout,
            })
            for index, layer in enumerate(layers)
        ]
        self.hidden = None
        return self

    def _choice_problems(self) -> list[tuple[tuple[str, ...], str]]:
        if self.layers is not None and self.hidden is not None:
            return [(("hidden",), "give either model.layers or model.hidden, not both")]
        if self.layers is not None or self.hidden is not None:
            return []
        if "layers" in self.model_fields_set:
            return [(("layers",), "empty — check the indentation of the lines below it")]
        return [((), "give either model.layers (a list of layers) or model.hidden (e.g. hidden: [32, 32])")]


class ConstantSchedule(_Section):
    """The learning rate stays at optimizer.lr."""

    name: Literal["constant"] = "constant"


class StepSchedule(_Section):
    """Multiply the learning rate by gamma every step_size epochs."""

    name: Literal["step"] = "step"
    step_size: PositiveInt = 10
    """Epochs between decays."""
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Decay factor."""


class ExponentialSchedule(_Section):
    """Multiply the learning rate by gamma after every epoch."""

    name: Literal["exponential"] = "exponential"
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.95
    """Decay factor per epoch."""


class CosineSchedule(_Section):
    """Cosine decay from optimizer.lr to min_lr over t_max epochs."""

    name: Literal["cosine"] = "cosine"
    min_lr: NonNegativeFloat = 0.0
    """Learning rate at the end of the decay."""
    t_max: PositiveInt | None = None
    """Length of the decay in epochs; default training.epochs."""


Schedule = Annotated[
    Union[ConstantSchedule, StepSchedule, ExponentialSchedule, CosineSchedule], Field(discriminator="name")
]


class OptimizerConfig(_Section):
    """The update rule and its hyperparameters; each rule reads only the ones it uses."""

    name: OptimizerName = "adam"
    lr: PositiveFloat = 0.01
    """Learning rate."""
    weight_decay: NonNegativeFloat = 0.0
    """L2 penalty (adamw: decoupled weight decay)."""
    momentum: Fraction = 0.9
    """momentum and nesterov: velocity decay."""
    beta1: Fraction = 0.9
    """adam and adamw: first-moment decay."""
    beta2: Fraction = 0.999
    """adam and adamw: second-moment decay."""
    eps: PositiveFloat = 1e-8
    """rmsprop, adam and adamw: added to the denominator."""
    rho: Annotated[float, Field(gt=0, lt=1)] = 0.99
    """rmsprop: decay of the squared-gradient average."""
    schedule: Schedule = Field(default_factory=ConstantSchedule)
    """Learning-rate schedule, measured in epochs."""
    clip_grad_norm: PositiveFloat | None = None
    """Rescale the gradient when its global L2 norm exceeds this; null = no clipping."""


class EarlyStopping(_Section):
    """Stop when the monitored metric has not improved by min_delta for `patience` epochs."""

    monitor: Monitor = "val_loss"
    """The metrics.csv column to watch: losses must fall, accuracy and R² rise."""
    patience: PositiveInt = 20
    """Epochs without improvement before stopping."""
    min_delta: NonNegativeFloat = 0.0
    """Smallest change that counts as an improvement."""


class InstrumentsConfig(_Section):
    """Training instruments (instruments.csv): per-example gradient statistics, noise scale, step quality, curvature."""

    every: Literal["auto"] | PositiveInt = "auto"
    """Instrumented steps: auto = the gradient log's schedule (training.log_every); N = every N-th step."""
    curvature_every: PositiveInt | None = None
    """λ_max of the batch loss's Hessian by power iteration every M-th step; null = never (it costs several steps)."""
    power_iterations: Annotated[int, Field(ge=1, le=1000)] = 20
    """Hessian-vector products per curvature step (warm-started from the previous eigenvector)."""

    @field_validator("every", mode="before")
    @classmethod
    def _check_every(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("expected 'auto' or an integer >= 1")


class TrainingConfig(_Section):
    """How long and in what batches to train."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 100
    batch_size: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = 32
    """Examples per step; null = full batch."""
    max_steps: PositiveInt | None = None
    """Stop after this many steps even if epochs remain."""
    early_stopping: EarlyStopping | None = None
    log_every: Literal["auto"] | PositiveInt = "auto"
    """Per-layer gradient statistics: auto = every step up to 2,000 steps, else about 2,000 spaced steps."""
    dtype: Literal["float32", "float64"] = "float64"
    compile: bool = True
    """Replay each step as a compiled program of the engine's recorded graph (bit-identical to false, faster)."""
    checkpoint_every: Literal["auto"] | PositiveInt | None = "auto"
    """checkpoint.npz for --resume: auto = after an epoch once 10 s have passed since the last checkpoint; N = every
    N epochs; null = never. The last epoch is always checkpointed (so a finished run can be extended)."""
    instruments: InstrumentsConfig | None = None
    """instruments.csv: null = off; {every: auto} = at the gradient log's steps (see the README for the cost)."""

    @field_validator("log_every", "checkpoint_every", mode="before")
    @classmethod
    def _check_auto_or_count(cls, value: object, info: ValidationInfo) -> object:
        # One clear message instead of one per member of the `"auto" | int` union.
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        if value is None and info.field_name == "checkpoint_every":
            return value
        if info.field_name == "checkpoint_every":
            raise ValueError("expected 'auto', an integer >= 1 or null")
        raise ValueError("expected 'auto' or an integer >= 1")


class OutputConfig(_Section):
    """Where runs are written."""

    dir: PathText = "runs"
    """Folder that receives one subfolder per run."""


class Config(_Section):
    """A whole experiment: data, model, loss, optimizer, training and output."""

    name: str = Field("run", json_schema_extra={"pattern": NAME_PATTERN})
    """Run name prefix: 1-64 letters, digits, '.', '_' or '-', not starting with '.'."""
    seed: Annotated[int, Field(ge=0)] = 0
    """One seed drives synthetic data, splits, initialisation and shuffling."""
    data: DataConfig
    model: ModelConfig
    loss: LossName
    """mse, mae, huber (regression); cross_entropy, bce (classification)."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_name(value)

    @model_validator(mode="after")
    def _check_loss_fits(self) -> Config:
        task = task_of_loss(self.loss)
        problems = []
        if self.data.task not in ("auto", task):
            problems.append(
                (("data", "task"), f"'{self.data.task}' contradicts loss '{self.loss}', a {task} loss")
            )
        output_units = self.model.layers[-1].units
        outputs = catalog.LOSSES[self.loss].outputs
        if outputs == "one" and output_units not in (None, 1):
            problems.append(((*_last_layer(self), "units"), f"loss '{self.loss}' needs exactly 1 output unit"))
        if outputs == "one_per_class" and output_units == 1:
            problems.append(
                ((*_last_layer(self), "units"), "loss 'cross_entropy' needs one output unit per class (or use bce)")
            )
        targets = self.data.target
        if task == "classification" and isinstance(targets, list) and len(targets) > 1:
            problems.append(
                (("data", "target"),
                 f"lists {len(targets)} columns, but loss '{self.loss}' needs one column of class labels")
            )
        if self.training.early_stopping is not None:
            problem = monitor_problem(self.training.early_stopping.monitor, task, self.data.val_fraction)
            if problem:
                problems.append((("training", "early_stopping", "monitor"), problem))
        raise_problems(*problems)
        return self


def _last_layer(config: Config) -> tuple[str | int, ...]:
    return ("model", "layers", len(config.model.layers) - 1)


def monitor_problem(monitor: str, task: Task, val_fraction: float) -> str | None:
    """Why `monitor` cannot be watched in a run of `task` (early stopping and sweeps share this), or None."""
    if monitor.startswith("val_") and val_fraction == 0:
        return f"'{monitor}' needs a validation split, but data.val_fraction is 0"
    needs = catalog.monitor_task(monitor)
    if needs not in (None, task):
        return f"'{monitor}' needs a {needs} loss, but the loss is a {task} loss"
    return None
