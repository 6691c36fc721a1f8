"""The dispatcher's tuning: one frozen value read by its loop (`dispatcher`), its delivery
policy (`delivery`) and its recording (`recording`); bot/delivery.py builds it from the
settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class DispatcherConfig:
    workers: int = 4
    batch_size: int = 50
    lease: timedelta = timedelta(seconds=60)
    idle_seconds: float = 5.0
    channel_max_attempts: int = 4
    unknown_max_attempts: int = 2
    max_age: timedelta = timedelta(hours=24)
    retry_schedule: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200)
    send_tries: int = 3
    send_retry_wait: float = 1.0
    circuit_probe_seconds: float = 60.0
    # The probe delay doubles with each trip up to this (PROBE_MAX_SECONDS).
    circuit_probe_max_seconds: float = 300.0
    # When a rate limit comes without a retry_after, and a paused channel's re-check interval.
    default_wait_seconds: float = 30.0
    # How long a read of the channels' states (paused, circuits) serves before the next claim
    # reads them again. Changes this process makes apply at once; another process's within
    # this time. Reading them with every batch costs a round trip per batch.
    states_ttl_seconds: float = 1.0
    # Without Redis only one process may dispatch: it holds the "dispatcher" lease.
    exclusive: bool = False
    # How long that lease lasts unrenewed (renewed every third of it): a successor takes
    # over this long after a crash. Independent of `lease`, which guards each claimed row.
    leader_lease: timedelta = timedelta(seconds=6)
