"""The workflow's definition is consistent: every state has its acting role and its stuck
setting wired to the configuration, recovery is for admins with a reason, and every state can
be reached."""

from __future__ import annotations

from bot.app import workflow_config
from bot.config import Settings
from services.workflow import STATES, TRANSITIONS, State, target_of
from services.workflow.definition import Party
from services.workflow.matching import Scope, Tier, ladder


def test_every_waiting_state_has_a_stuck_threshold_from_the_settings() -> None:
    config = workflow_config(Settings(stuck_after_offered_minutes=7))
    for spec in STATES.values():
        assert (spec.stuck_setting is None) == spec.final, spec
        assert (spec.acting_role is None) == spec.final, spec
        if spec.stuck_setting is not None:
            assert spec.stuck_setting in config.stuck_after
    assert config.stuck_after["stuck_after_offered"].total_seconds() == 7 * 60


def test_recovery_transitions_are_for_admins_with_a_reason() -> None:
    recovery = [t for t in TRANSITIONS.values() if t.recovery]
    assert {t.action.value for t in recovery} == {
        "force_next", "reset_previous", "force_complete", "reassign"}
    assert all(t.parties == {Party.ADMIN} and t.needs_reason for t in recovery)


def test_every_state_is_reachable_from_new_and_final_states_lead_nowhere() -> None:
    reached, frontier = {State.NEW}, [State.NEW]
    while frontier:
        state = frontier.pop()
        for action in TRANSITIONS:
            target = target_of(action, state)
            if target is not None and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)
    for final in (State.CONFIRMED, State.CANCELLED):
        assert all(target_of(action, final) is None for action in TRANSITIONS)


def test_the_emergency_tier_is_for_urgent_requests_only() -> None:
    assert (Tier.EMERGENCY, Scope.ON_CALL) not in ladder(urgent=False)
    assert ladder(urgent=True)[-1] == (Tier.EMERGENCY, Scope.ON_CALL)
