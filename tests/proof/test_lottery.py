"""The audit lottery: reproducible from the revealed secret, uniform, at the asked rate; epochs and lateness."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_sdk.proof.lottery import EpochClock, audit_draw, commitment, epoch_secret, selected
from meshcore_sdk.protocol.errors import ConfigError, ReceiptLate

MASTER = b"meshcore test master secret"
JOBS = [f"r-{i:08x}" for i in range(100_000)]


def test_the_construction_is_pinned() -> None:
    secret = epoch_secret(MASTER, 7)
    assert secret == hmac.new(MASTER, b"meshcore/epoch/v1" + (7).to_bytes(8, "little"), hashlib.sha256).digest()
    assert commitment(secret) == hashlib.sha256(secret).hexdigest()
    mac = hmac.new(secret, b"r-1", hashlib.sha256).digest()
    assert audit_draw(secret, "r-1") == int.from_bytes(mac[:8], "big") / 2**64


def test_anyone_with_the_revealed_secret_recomputes_every_selection() -> None:
    """The router's choices, replayed by an outsider who only saw the commitment and then the secret."""
    secret = epoch_secret(MASTER, 42)
    published = commitment(secret)
    routers_choice = [job for job in JOBS[:5000] if selected(secret, job, 0.02)]
    revealed = bytes(secret)
    assert commitment(revealed) == published
    assert [job for job in JOBS[:5000] if selected(revealed, job, 0.02)] == routers_choice
    assert epoch_secret(MASTER, 43) != secret


def test_draws_over_100k_job_ids_are_uniform() -> None:
    """Chi-square over 100 equal bins: 99 degrees of freedom, 148.2 is the 0.1% critical value."""
    secret = epoch_secret(MASTER, 1)
    counts = [0] * 100
    for job in JOBS:
        counts[int(audit_draw(secret, job) * 100)] += 1
    expected = len(JOBS) / 100
    chi_square = sum((count - expected) ** 2 / expected for count in counts)
    print(f"chi-square {chi_square:.1f} over 99 degrees of freedom")
    assert chi_square < 148.2


@pytest.mark.parametrize("rate", [0.01, 0.02, 0.3])
def test_selection_frequency_matches_the_rate(rate: float) -> None:
    """Within 4.5 standard deviations of the rate over 100k jobs."""
    secret = epoch_secret(MASTER, 2)
    hits = sum(selected(secret, job, rate) for job in JOBS)
    sigma = (rate * (1 - rate) / len(JOBS)) ** 0.5
    assert abs(hits / len(JOBS) - rate) < 4.5 * sigma


def test_draws_under_two_secrets_are_uncorrelated() -> None:
    """Knowing one epoch's draws says nothing about the next epoch's (correlation near 0)."""
    a, b = epoch_secret(MASTER, 3), epoch_secret(MASTER, 4)
    xs = [audit_draw(a, job) for job in JOBS[:20_000]]
    ys = [audit_draw(b, job) for job in JOBS[:20_000]]
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / n
    assert abs(cov / (1 / 12)) < 4.5 / n**0.5


@given(st.binary(max_size=64), st.text(max_size=40))
def test_draws_are_in_the_unit_interval(secret: bytes, job_id: str) -> None:
    assert 0.0 <= audit_draw(secret, job_id) < 1.0
    assert not selected(secret, job_id, 0.0) and selected(secret, job_id, 1.0)


def test_epochs_and_reveals() -> None:
    clock = EpochClock(epoch_s=3600.0, reveal_grace_s=60.0)
    assert [clock.index_at(t) for t in (0.0, 3599.9, 3600.0, -0.5)] == [0, 0, 1, -1]
    assert clock.reveal_at(0) == 3660.0
    assert not clock.revealed(0, 3659.9) and clock.revealed(0, 3660.0)
    assert clock.receipt_in_time(0, 3659.9) and not clock.receipt_in_time(0, 3660.0)


def test_a_receipt_after_the_reveal_is_late() -> None:
    clock = EpochClock(epoch_s=600.0, reveal_grace_s=30.0)
    clock.require_in_time(5, 3629.0)
    with pytest.raises(ReceiptLate):
        clock.require_in_time(5, 3630.0)


@pytest.mark.parametrize(("epoch_s", "grace_s"), [(0.0, 0.0), (-1.0, 0.0), (10.0, -1.0), (float("inf"), 0.0)])
def test_bad_clock_settings_are_config_errors(epoch_s: float, grace_s: float) -> None:
    with pytest.raises(ConfigError):
        EpochClock(epoch_s, grace_s)
