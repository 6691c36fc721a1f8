"""The flood gate lets a user through RATE times per WINDOW and warns once per window."""

from __future__ import annotations

from middlewares.throttling import FloodGate
from services.clock import FakeClock


def test_flood_is_cut_after_rate_and_others_are_unaffected() -> None:
    clock = FakeClock()
    gate = FloodGate(rate=3, window=2.0, clock=clock)
    assert [gate.allow(1) for _ in range(5)] == [True, True, True, False, False]
    assert gate.allow(2) is True


def test_window_slides() -> None:
    clock = FakeClock()
    gate = FloodGate(rate=2, window=1.0, clock=clock)
    assert gate.allow(1) and gate.allow(1) and not gate.allow(1)
    clock.advance(1.01)
    assert gate.allow(1)


def test_warning_is_given_once_per_window() -> None:
    clock = FakeClock()
    gate = FloodGate(rate=1, window=5.0, clock=clock)
    assert gate.should_warn(1) is True
    assert gate.should_warn(1) is False
    clock.advance(5.1)
    assert gate.should_warn(1) is True


def test_idle_users_are_forgotten() -> None:
    clock = FakeClock()
    gate = FloodGate(rate=1, window=1.0, clock=clock)
    for user in range(1000):
        gate.allow(user)
    clock.advance(120)
    gate.allow(5000)
    assert len(gate._hits) == 1
