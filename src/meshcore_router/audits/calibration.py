"""The calibration table: the honest band of Tier-B scores, and the flag thresholds derived from it.

Theory of operation (research §5.3, §6.5)
------------------------------------------
Honest llama.cpp runs do not agree bit for bit across paths: a worker that
decodes one token at a time and an auditor that prefills prompt and output in
one pass differ by rounding, and by much more on quantized weights (int8
activations) than on F16.  So every Tier-B threshold is *measured*, per

* ``weight_format``: the pinned GGUF's format (``F16``, ``Q8_0``, ``Q4_K_M``, ...);
* ``worker_class`` / ``auditor_class``: the build classes of
  :func:`meshcore_sdk.proof.build.build_class` (``cpu-x86-avx2``, ...), or ``*``;
* ``path``: how the auditor recomputed, ``decode-vs-prefill`` for Tier B;
* ``model_sha256``: optionally one model file (a row for it wins over the format's row).

Each :class:`CalibrationEntry` keeps the largest honest score measured over
``n_chunks`` chunks (``honest_max``) and the thresholds derived from it by
:func:`derive_thresholds`: three times the honest maximum, or a floor where the
honest maximum is zero (an F16 pin agrees on every token, and a threshold of 0
would flag the first near-tie).  ``margin_min`` runs the other way: its honest
value is the most negative keyed margin seen, and its threshold is three times
further below zero.

Lookup order, most specific first; within one rank exactly one row can match,
because :class:`CalibrationTable` refuses duplicate keys:

====  ================  =============  ==============
rank  model_sha256      worker_class   auditor_class
====  ================  =============  ==============
1     the model's       exact          exact
2     the model's       exact          ``*``
3     the model's       ``*``          exact
4     the model's       ``*``          ``*``
5-8   ``null`` (format  as 1-4         as 1-4
      row)
====  ================  =============  ==============

The weight format and the path must always match exactly; nothing matching
raises :class:`CalibrationNotFound`, because judging with a guessed band would
either slash honest nodes or pass cheats.

The packaged ``calibration.json`` holds the research report's first values
(SmolLM2-135M on one CPU), every row marked ``provisional``; measured rows for
the fleet's models replace them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meshcore_sdk.protocol.errors import ConfigError, InternalError

__all__ = [
    "ANY_CLASS",
    "DEFAULT_FLOORS",
    "DEFAULT_PATH",
    "THRESHOLD_FACTOR",
    "CalibrationEntry",
    "CalibrationInvalid",
    "CalibrationNotFound",
    "CalibrationTable",
    "ScoreLimits",
    "Thresholds",
    "derive_thresholds",
]

ANY_CLASS: Final = "*"
"""A build class that matches every class."""

DEFAULT_PATH: Final = "decode-vs-prefill"
"""The Tier-B path: the worker decoded, the auditor prefilled."""

THRESHOLD_FACTOR: Final = 3.0
"""Thresholds sit at this multiple of the honest maximum (research §6.6, stage 1)."""

_SHA256_HEX: Final = r"^[0-9a-f]{64}$"


class CalibrationNotFound(InternalError):
    """No calibration row matches the model, format and build classes of an audit."""

    default_retryable = False


class CalibrationInvalid(ConfigError):
    """The calibration table could not be read or does not hold together."""


class ScoreLimits(BaseModel):
    """One value per Tier-B score: an honest maximum, a floor, or a flag threshold.

    Chunk values apply to every chunk of consecutive positions (the digest's 32);
    response values to the means over the whole response.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    s_lp_chunk: float = Field(ge=0.0, description="chunk mean |committed - auditor| top-K log-prob")
    kl_chunk: float = Field(ge=0.0, description="chunk mean KL over the committed top-K ids")
    tok_disagree_chunk: float = Field(ge=0.0, le=1.0, description="fraction of the chunk's tokens in disagreement")
    margin_min: float = Field(description="most negative keyed margin of a chunk (<= 0 for limits)")
    hid_exp_chunk: float = Field(ge=0.0, description="hidden-digest exponent mismatches per chunk")
    hid_mantissa_mean_chunk: float = Field(ge=0.0, description="hidden-digest mean mantissa difference per chunk")
    s_lp_response: float = Field(ge=0.0, description="response mean s_lp")
    kl_response: float = Field(ge=0.0, description="response mean KL")


DEFAULT_FLOORS: Final = ScoreLimits(
    s_lp_chunk=0.01,
    kl_chunk=1e-5,
    tok_disagree_chunk=0.1,
    margin_min=-0.15,
    hid_exp_chunk=3.0,
    hid_mantissa_mean_chunk=0.3,
    s_lp_response=0.006,
    kl_response=6e-6,
)
"""Thresholds used where the honest maximum is zero (an F16 pin): just above one rounding step."""


def derive_thresholds(
    honest_max: ScoreLimits, *, factor: float = THRESHOLD_FACTOR, floors: ScoreLimits = DEFAULT_FLOORS
) -> ScoreLimits:
    """Flag thresholds from measured honest maxima: ``factor`` times each, never below its floor.

    For ``margin_min`` "above" means "more negative": the threshold is
    ``min(factor * min(honest, 0), floor)`` with a negative floor.
    """
    if factor < 1.0:
        raise ConfigError(f"factor must be >= 1, got {factor}")
    values = {name: max(factor * value, getattr(floors, name)) for name, value in honest_max.model_dump().items()}
    values["tok_disagree_chunk"] = min(values["tok_disagree_chunk"], 1.0)
    values["margin_min"] = min(factor * min(honest_max.margin_min, 0.0), floors.margin_min)
    return ScoreLimits.model_validate(values)


class Thresholds(ScoreLimits):
    """The flag thresholds one audit is judged with, and the honest band they came from.

    The fields inherited from :class:`ScoreLimits` are the thresholds: a score
    beyond one flags.  ``honest_max`` is the band an honest run stays in; a score
    past it but within the threshold is ambiguous.  Written into the audit
    transcript as is, so a replay judges with the same numbers.
    """

    honest_max: ScoreLimits
    provisional: bool = False
    calibration_key: str = Field(default="", description="which calibration row this came from")

    @model_validator(mode="after")
    def _band_within_thresholds(self) -> Self:
        _check_band(self, self.honest_max)
        return self


def _check_band(thresholds: ScoreLimits, honest_max: ScoreLimits) -> None:
    if thresholds.margin_min > 0.0:
        raise ValueError(f"threshold margin_min must be <= 0, got {thresholds.margin_min}")
    for name, limit in thresholds.model_dump(include=set(ScoreLimits.model_fields)).items():
        honest = getattr(honest_max, name)
        inside = honest >= limit if name == "margin_min" else honest <= limit
        if not inside:
            raise ValueError(f"honest max of {name} ({honest}) lies beyond its threshold ({limit})")


class CalibrationEntry(BaseModel):
    """One row of the table: an honest band measured for one (model or format, worker, auditor, path)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight_format: str = Field(min_length=1)
    worker_class: str = Field(default=ANY_CLASS, min_length=1)
    auditor_class: str = Field(default=ANY_CLASS, min_length=1)
    path: str = DEFAULT_PATH
    model_sha256: str | None = Field(default=None, pattern=_SHA256_HEX)
    thresholds: ScoreLimits
    honest_max: ScoreLimits
    n_chunks: int = Field(ge=0, description="honest chunks the maximum was taken over")
    measured_by: str = Field(min_length=1, description="the command (or source) that measured honest_max")
    provisional: bool = False

    @model_validator(mode="after")
    def _band_within_thresholds(self) -> Self:
        _check_band(self.thresholds, self.honest_max)
        return self

    @property
    def key(self) -> tuple[str | None, str, str, str, str]:
        """What identifies the row: (model, format, worker class, auditor class, path)."""
        return (self.model_sha256, self.weight_format, self.worker_class, self.auditor_class, self.path)

    def describe(self) -> str:
        """The row's key as one line, for transcripts and error messages."""
        model = self.model_sha256[:12] if self.model_sha256 else "any-model"
        return f"{model}/{self.weight_format}/{self.worker_class}->{self.auditor_class}/{self.path}"

    def to_thresholds(self) -> Thresholds:
        """The row as the :class:`Thresholds` a judge takes."""
        return Thresholds(
            **self.thresholds.model_dump(),
            honest_max=self.honest_max,
            provisional=self.provisional,
            calibration_key=self.describe(),
        )


class _TableFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, le=1)
    entries: tuple[CalibrationEntry, ...]


class CalibrationTable:
    """The calibration rows, indexed for lookup (see the module docstring for the order)."""

    def __init__(self, entries: Iterable[CalibrationEntry]) -> None:
        self._rows: dict[tuple[str | None, str, str, str, str], CalibrationEntry] = {}
        for entry in entries:
            if entry.key in self._rows:
                raise CalibrationInvalid(f"two calibration rows for {entry.describe()}")
            self._rows[entry.key] = entry

    @classmethod
    def load(cls, path: Path | str | None = None) -> CalibrationTable:
        """Read a table from ``path``, or the one packaged with Meshcore when ``path`` is None."""
        try:
            if path is None:
                text = resources.files(__package__ or __name__).joinpath("calibration.json").read_text("utf-8")
            else:
                text = Path(path).read_text("utf-8")
            table = _TableFile.model_validate(json.loads(text))
        except (OSError, ValueError, ValidationError) as exc:
            raise CalibrationInvalid(f"cannot read the calibration table {path or '(packaged)'}: {exc}") from exc
        return cls(table.entries)

    @property
    def entries(self) -> tuple[CalibrationEntry, ...]:
        """Every row, in the order they were given."""
        return tuple(self._rows.values())

    def lookup(
        self,
        model_sha256: str | None,
        weight_format: str,
        worker_class: str,
        auditor_class: str,
        *,
        path: str = DEFAULT_PATH,
    ) -> Thresholds:
        """The thresholds of the most specific row that matches; :class:`CalibrationNotFound` if none does."""
        model = model_sha256.lower().removeprefix("sha256:") if model_sha256 else None
        models = (model, None) if model else (None,)
        for candidate_model in models:
            for worker in (worker_class, ANY_CLASS):
                for auditor in (auditor_class, ANY_CLASS):
                    entry = self._rows.get((candidate_model, weight_format, worker, auditor, path))
                    if entry is not None:
                        return entry.to_thresholds()
        raise CalibrationNotFound(
            f"no calibration for model {model or '?'}, format {weight_format}, "
            f"worker {worker_class}, auditor {auditor_class}, path {path}"
        )
