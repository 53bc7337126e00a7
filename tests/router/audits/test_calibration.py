"""The calibration table: the packaged rows, the lookup order, and refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshcore_router.audits import calibration
from meshcore_router.audits.calibration import (
    CalibrationEntry,
    CalibrationInvalid,
    CalibrationNotFound,
    CalibrationTable,
    ScoreLimits,
    Thresholds,
    derive_thresholds,
)
from meshcore_sdk.protocol.errors import ConfigError, InternalError, MeshError

pytestmark = pytest.mark.timeout(30)

MODEL = "ab" * 32
HONEST = ScoreLimits(
    s_lp_chunk=0.1,
    kl_chunk=0.005,
    tok_disagree_chunk=0.09,
    margin_min=-2.0,
    hid_exp_chunk=7,
    hid_mantissa_mean_chunk=2.0,
    s_lp_response=0.09,
    kl_response=0.003,
)


def row(**fields: Any) -> CalibrationEntry:
    base: dict[str, Any] = {
        "weight_format": "Q4_K_M",
        "thresholds": derive_thresholds(HONEST),
        "honest_max": HONEST,
        "n_chunks": 10,
        "measured_by": "test",
    }
    return CalibrationEntry(**(base | fields))


def test_module_exports_are_pinned() -> None:
    assert calibration.__all__ == [
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


@pytest.mark.parametrize(
    ("weight_format", "s_lp", "kl", "mantissa", "exp"),
    [
        ("Q4_K_M", 0.3, 0.015, 6.0, 21.0),
        ("Q8_0", 0.3, 0.015, 6.0, 21.0),
        ("Q4_0", 0.3, 0.015, 6.0, 21.0),
        ("F16", 0.012, 2e-5, 0.3, 3.0),
        ("BF16", 0.012, 2e-5, 0.3, 3.0),
    ],
)
def test_the_packaged_table_holds_the_research_values(
    weight_format: str, s_lp: float, kl: float, mantissa: float, exp: float
) -> None:
    """Research §6.5's first thresholds, every row provisional until measured on the fleet."""
    found = CalibrationTable.load().lookup(MODEL, weight_format, "cpu-x86-avx2", "cpu-x86-avx512")

    assert (found.s_lp_chunk, found.kl_chunk, found.hid_mantissa_mean_chunk, found.hid_exp_chunk) == (
        s_lp,
        kl,
        mantissa,
        exp,
    )
    assert found.provisional
    assert found.calibration_key == f"any-model/{weight_format}/*->*/decode-vs-prefill"


def test_every_packaged_row_keeps_its_honest_band_at_or_below_a_third_of_its_threshold() -> None:
    """The research target: honest scores <= 1/3 of the flag threshold (research §0, §7 T1)."""
    for entry in CalibrationTable.load().entries:
        for name, limit in entry.thresholds.model_dump().items():
            honest = getattr(entry.honest_max, name)
            if name == "margin_min":
                assert honest >= limit / 3, (entry.describe(), name)
            else:
                assert honest <= limit / 3 * 1.0001, (entry.describe(), name)


def test_the_packaged_json_is_package_data() -> None:
    path = Path(calibration.__file__).with_name("calibration.json")

    assert json.loads(path.read_text())["version"] == 1
    assert CalibrationTable.load(path).entries == CalibrationTable.load().entries


@pytest.mark.parametrize(
    ("model", "worker", "auditor", "expected"),
    [
        (MODEL, "cpu-x86-avx2", "cuda-sm89", "model-exact"),
        (MODEL, "cpu-x86-avx2", "metal", "model-worker"),
        (MODEL, "cpu-arm-neon", "cuda-sm89", "model-auditor"),
        (MODEL, "cpu-arm-neon", "metal", "model-any"),
        (f"sha256:{MODEL.upper()}", "cpu-arm-neon", "metal", "model-any"),
        ("cd" * 32, "cpu-x86-avx2", "cuda-sm89", "format-exact"),
        (None, "cpu-x86-avx2", "cuda-sm89", "format-exact"),
        (None, "cpu-x86-avx2", "metal", "format-worker"),
        (None, "vulkan", "metal", "format-any"),
    ],
)
def test_lookup_takes_the_most_specific_row(model: str | None, worker: str, auditor: str, expected: str) -> None:
    """Model rows before format rows; within each, exact classes before wildcards, worker before auditor."""
    table = CalibrationTable(
        [
            row(model_sha256=MODEL, worker_class="cpu-x86-avx2", auditor_class="cuda-sm89", measured_by="model-exact"),
            row(model_sha256=MODEL, worker_class="cpu-x86-avx2", measured_by="model-worker"),
            row(model_sha256=MODEL, auditor_class="cuda-sm89", measured_by="model-auditor"),
            row(model_sha256=MODEL, measured_by="model-any"),
            row(worker_class="cpu-x86-avx2", auditor_class="cuda-sm89", measured_by="format-exact"),
            row(worker_class="cpu-x86-avx2", measured_by="format-worker"),
            row(measured_by="format-any"),
        ]
    )
    by_key = {entry.describe(): entry.measured_by for entry in table.entries}

    found = table.lookup(model, "Q4_K_M", worker, auditor)

    assert by_key[found.calibration_key] == expected


def test_a_model_row_wins_over_a_format_row_even_with_wildcard_classes() -> None:
    model_band = HONEST.model_copy(update={"s_lp_chunk": 0.01})
    table = CalibrationTable(
        [
            row(worker_class="cpu-x86-avx2", auditor_class="cpu-x86-avx2"),
            row(model_sha256=MODEL, honest_max=model_band, thresholds=derive_thresholds(model_band)),
        ]
    )

    assert table.lookup(MODEL, "Q4_K_M", "cpu-x86-avx2", "cpu-x86-avx2").s_lp_chunk == pytest.approx(0.03)
    assert table.lookup("ee" * 32, "Q4_K_M", "cpu-x86-avx2", "cpu-x86-avx2").s_lp_chunk == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("weight_format", "path"),
    [("IQ2_XXS", "decode-vs-prefill"), ("q4_k_m", "decode-vs-prefill"), ("Q4_K_M", "replay")],
)
def test_nothing_matching_is_a_typed_error(weight_format: str, path: str) -> None:
    table = CalibrationTable([row()])

    with pytest.raises(CalibrationNotFound, match=weight_format) as caught:
        table.lookup(MODEL, weight_format, "cpu-x86-avx2", "cpu-x86-avx2", path=path)
    assert isinstance(caught.value, InternalError)
    assert isinstance(caught.value, MeshError)
    assert not caught.value.retryable


def test_duplicate_rows_are_refused() -> None:
    with pytest.raises(CalibrationInvalid, match="two calibration rows"):
        CalibrationTable([row(), row(measured_by="again")])


def test_a_row_whose_honest_band_exceeds_its_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond its threshold"):
        row(thresholds=HONEST.model_copy(update={"kl_chunk": 0.001}))
    with pytest.raises(ValueError, match="beyond its threshold"):
        row(thresholds=derive_thresholds(HONEST).model_copy(update={"margin_min": -1.0}))


@pytest.mark.parametrize(
    "text",
    ["not json", '{"version": 1}', '{"version": 2, "entries": []}', '{"version": 1, "entries": [{"weight": 1}]}'],
)
def test_an_unreadable_table_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(text)

    with pytest.raises(CalibrationInvalid) as caught:
        CalibrationTable.load(path)
    assert isinstance(caught.value, ConfigError)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationInvalid, match="cannot read"):
        CalibrationTable.load(tmp_path / "absent.json")


def test_derived_thresholds_are_three_times_the_honest_max_with_floors_for_zeros() -> None:
    f16 = ScoreLimits(
        s_lp_chunk=0.004,
        kl_chunk=0.0,
        tok_disagree_chunk=0.0,
        margin_min=0.02,
        hid_exp_chunk=0,
        hid_mantissa_mean_chunk=0.1,
        s_lp_response=0.0,
        kl_response=0.0,
    )

    derived = derive_thresholds(f16)

    assert derived.s_lp_chunk == pytest.approx(0.012)
    assert derived.hid_mantissa_mean_chunk == pytest.approx(0.3)
    floors = calibration.DEFAULT_FLOORS
    assert (derived.kl_chunk, derived.tok_disagree_chunk, derived.hid_exp_chunk) == (
        floors.kl_chunk,
        floors.tok_disagree_chunk,
        floors.hid_exp_chunk,
    )
    assert derived.margin_min == floors.margin_min  # a positive honest margin still gives a negative threshold
    assert derive_thresholds(HONEST).margin_min == -6.0
    assert derive_thresholds(HONEST.model_copy(update={"tok_disagree_chunk": 0.5})).tok_disagree_chunk == 1.0
    with pytest.raises(ConfigError):
        derive_thresholds(HONEST, factor=0.5)


def test_thresholds_are_frozen_and_carry_their_honest_band() -> None:
    found = CalibrationTable([row()]).lookup(None, "Q4_K_M", "a", "b")

    assert isinstance(found, Thresholds)
    assert found.honest_max == HONEST
    with pytest.raises(ValueError, match="frozen"):
        found.s_lp_chunk = 1.0  # type: ignore[misc]
    assert Thresholds.model_validate_json(found.model_dump_json()) == found
