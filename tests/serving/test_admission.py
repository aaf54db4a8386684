"""The service-time estimate behind deadline shedding: per batch size, fading after a stall, probes."""
from __future__ import annotations

import pytest

from optlab.serving.admission import ServiceEstimate, size_bucket
from optlab.serving.policies import Admission

MS = 1_000_000


def test_buckets_are_powers_of_two():
    assert [size_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 64)] == [0, 1, 2, 2, 3, 3, 4, 6]


def test_no_evidence_sheds_nothing_and_sizes_are_estimated_apart():
    estimate = ServiceEstimate()
    assert estimate.ns(1, 0) == 0.0
    estimate.observe(1, 1 * MS, 0)
    estimate.observe(32, 8 * MS, 0)
    assert estimate.ns(1, 0) == pytest.approx(1 * MS)
    assert estimate.ns(32, 0) == pytest.approx(8 * MS)
    assert estimate.ns(2, 0) == pytest.approx(2 * MS)  # extrapolated linearly from the nearest smaller size
    assert estimate.ns(64, 0) == pytest.approx(16 * MS)


def test_a_stall_fades_with_time_and_with_shed_work():
    estimate = ServiceEstimate(half_life_s=0.1, shed_half_life=10)
    for t in range(10):
        estimate.observe(1, 1 * MS, t * MS)
    estimate.observe(1, 60 * MS, 10 * MS)  # the stall
    stalled = estimate.ns(1, 10 * MS)
    assert stalled > 10 * MS  # above a 10 ms deadline: this is what used to lock the shedder out
    assert estimate.ns(1, 110 * MS) == pytest.approx(1 * MS + (stalled - 1 * MS) / 2)
    estimate.shed += 10  # ten requests shed with no time passing halve the excess too
    assert estimate.ns(1, 10 * MS) == pytest.approx(1 * MS + (stalled - 1 * MS) / 2)
    assert estimate.ns(1, 10_000 * MS) == pytest.approx(1 * MS)  # never below the fastest call seen


def test_a_probe_goes_through_when_nothing_was_admitted_for_a_while():
    estimate = ServiceEstimate(probe_every_ms=50)
    estimate.admitted(0)
    assert not estimate.probe_due(10 * MS)
    assert estimate.probe_due(60 * MS)
    assert not estimate.probe_due(70 * MS)  # one probe per interval
    assert estimate.probes == 1


def test_bad_admission_settings_are_refused():
    with pytest.raises(ValueError, match="shed_half_life"):
        Admission(deadline_ms=10, shed_half_life=0)
    with pytest.raises(ValueError, match="probe_every_ms"):
        Admission(deadline_ms=10, probe_every_ms=0)
