"""The service-request workflow, as data: read this module to know the process.

    NEW -> MATCHING -> OFFERED -> ASSIGNED -> IN_PROGRESS -> COMPLETED -> CONFIRMED
                 \\         \\                                     |
                  +-> ESCALATED (nobody found)                    +-> DISPUTED -> CONFIRMED
                                                                               -> IN_PROGRESS
    any state before COMPLETED -> CANCELLED (requester or admin)

Each state names the role that must act next and the setting after which a request left in
it counts as stuck. Each transition names the states it leaves, the state it reaches and who
may take it. The admin recovery transitions (force to the next state, reset to the previous
one, complete, reassign) are transitions like the others, for an admin with a reason.
`services.workflow.manager` is the one place that applies them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from database.models import Role


class State(enum.StrEnum):
    NEW = "new"
    MATCHING = "matching"
    OFFERED = "offered"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    DISPUTED = "disputed"
    CANCELLED = "cancelled"
    ESCALATED = "escalated"


class Party(enum.StrEnum):
    """Who takes a transition, relative to the request."""

    REQUESTER = "requester"  # the request's own requester
    PROVIDER = "provider"  # the request's assigned provider (or, for accept, the one offered)
    OPERATOR = "operator"  # any user with the operator role
    ADMIN = "admin"  # any user with the admin role
    SYSTEM = "system"  # the bot itself: matching, the scheduler's jobs


class Action(enum.StrEnum):
    SUBMIT = "submit"
    OFFER = "offer"
    ESCALATE = "escalate"
    ACCEPT = "accept"
    REMATCH = "rematch"
    ASSIGN = "assign"
    START = "start"
    COMPLETE = "complete"
    CONFIRM = "confirm"
    AUTO_CONFIRM = "auto_confirm"
    DISPUTE = "dispute"
    RESOLVE_CONFIRM = "resolve_confirm"
    RESOLVE_REWORK = "resolve_rework"
    CANCEL = "cancel"
    # Admin recovery (the /workflow_recovery menus): an admin actor and a reason, always.
    FORCE_NEXT = "force_next"
    RESET_PREVIOUS = "reset_previous"
    FORCE_COMPLETE = "force_complete"
    REASSIGN = "reassign"


@dataclass(frozen=True, slots=True)
class StateSpec:
    state: State
    acting_role: Role | None  # who must act next; None: nobody (a final state)
    # The setting (WorkflowConfig.stuck_after) naming how long a request may sit here before
    # it counts as stuck; None: never stuck (final states).
    stuck_setting: str | None
    final: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    action: Action
    sources: frozenset[State]
    target: State | None  # None: the target depends on the source (see RECOVERY_TARGETS)
    parties: frozenset[Party]
    needs_reason: bool = False
    recovery: bool = False


def _t(
    action: Action,
    sources: Iterable[State],
    target: State | None,
    *parties: Party,
    needs_reason: bool = False,
    recovery: bool = False,
) -> Transition:
    return Transition(
        action, frozenset(sources), target, frozenset(parties), needs_reason, recovery
    )


S, P = State, Party

STATES: dict[State, StateSpec] = {
    spec.state: spec
    for spec in (
        StateSpec(S.NEW, Role.OPERATOR, "stuck_after_new"),
        StateSpec(S.MATCHING, Role.OPERATOR, "stuck_after_matching"),
        StateSpec(S.OFFERED, Role.PROVIDER, "stuck_after_offered"),
        StateSpec(S.ASSIGNED, Role.PROVIDER, "stuck_after_assigned"),
        StateSpec(S.IN_PROGRESS, Role.PROVIDER, "stuck_after_in_progress"),
        StateSpec(S.COMPLETED, Role.REQUESTER, "stuck_after_completed"),
        StateSpec(S.DISPUTED, Role.ADMIN, "stuck_after_disputed"),
        StateSpec(S.ESCALATED, Role.OPERATOR, "stuck_after_escalated"),
        StateSpec(S.CONFIRMED, None, None, final=True),
        StateSpec(S.CANCELLED, None, None, final=True),
    )
}

# A requester or an admin may cancel until the work is completed.
CANCELLABLE = frozenset({S.NEW, S.MATCHING, S.OFFERED, S.ASSIGNED, S.IN_PROGRESS, S.ESCALATED})

TRANSITIONS: dict[Action, Transition] = {
    t.action: t
    for t in (
        _t(Action.SUBMIT, [S.NEW], S.MATCHING, P.REQUESTER, P.SYSTEM),
        _t(Action.OFFER, [S.MATCHING], S.OFFERED, P.SYSTEM),
        _t(Action.ESCALATE, [S.MATCHING, S.OFFERED], S.ESCALATED, P.SYSTEM),
        _t(Action.ACCEPT, [S.OFFERED], S.ASSIGNED, P.PROVIDER),
        # An escalated request matched again, by an admin or an operator.
        _t(Action.REMATCH, [S.ESCALATED], S.MATCHING, P.OPERATOR, P.ADMIN),
        # An escalated request given to a provider by hand.
        _t(Action.ASSIGN, [S.ESCALATED], S.ASSIGNED, P.OPERATOR, P.ADMIN),
        _t(Action.START, [S.ASSIGNED], S.IN_PROGRESS, P.PROVIDER),
        _t(Action.COMPLETE, [S.IN_PROGRESS], S.COMPLETED, P.PROVIDER),
        _t(Action.CONFIRM, [S.COMPLETED], S.CONFIRMED, P.REQUESTER),
        _t(Action.AUTO_CONFIRM, [S.COMPLETED], S.CONFIRMED, P.SYSTEM),
        _t(Action.DISPUTE, [S.COMPLETED], S.DISPUTED, P.REQUESTER, needs_reason=True),
        _t(Action.RESOLVE_CONFIRM, [S.DISPUTED], S.CONFIRMED, P.ADMIN, needs_reason=True),
        _t(Action.RESOLVE_REWORK, [S.DISPUTED], S.IN_PROGRESS, P.ADMIN, needs_reason=True),
        _t(Action.CANCEL, CANCELLABLE, S.CANCELLED, P.REQUESTER, P.ADMIN),
        _t(Action.FORCE_NEXT, [S.ASSIGNED, S.IN_PROGRESS, S.COMPLETED, S.DISPUTED], None,
           P.ADMIN, needs_reason=True, recovery=True),
        _t(Action.RESET_PREVIOUS, [S.OFFERED, S.ASSIGNED, S.IN_PROGRESS, S.COMPLETED,
                                   S.ESCALATED], None,
           P.ADMIN, needs_reason=True, recovery=True),
        _t(Action.FORCE_COMPLETE, [S.ASSIGNED, S.IN_PROGRESS, S.COMPLETED, S.DISPUTED],
           S.CONFIRMED, P.ADMIN, needs_reason=True, recovery=True),
        _t(Action.REASSIGN, [S.MATCHING, S.OFFERED, S.ASSIGNED, S.IN_PROGRESS, S.ESCALATED],
           S.ASSIGNED, P.ADMIN, needs_reason=True, recovery=True),
    )
}

# Where force-next and reset-previous lead from each state they apply to. Resetting a request
# that has (or had offers for) a provider back to MATCHING runs matching again.
RECOVERY_TARGETS: dict[Action, dict[State, State]] = {
    Action.FORCE_NEXT: {
        S.ASSIGNED: S.IN_PROGRESS,
        S.IN_PROGRESS: S.COMPLETED,
        S.COMPLETED: S.CONFIRMED,
        S.DISPUTED: S.CONFIRMED,
    },
    Action.RESET_PREVIOUS: {
        S.OFFERED: S.MATCHING,
        S.ASSIGNED: S.MATCHING,
        S.IN_PROGRESS: S.ASSIGNED,
        S.COMPLETED: S.IN_PROGRESS,
        S.ESCALATED: S.MATCHING,
    },
}

# States in which a provider holds the request (counts against their capacity).
ACTIVE = frozenset({S.ASSIGNED, S.IN_PROGRESS})
# States in which requester and provider can message each other through the bot.
CONVERSING = frozenset({S.ASSIGNED, S.IN_PROGRESS, S.COMPLETED, S.DISPUTED})


def target_of(action: Action, source: State) -> State | None:
    """The state `action` leads to from `source`; None when it does not apply there."""
    transition = TRANSITIONS[action]
    if source not in transition.sources:
        return None
    if transition.target is not None:
        return transition.target
    return RECOVERY_TARGETS[action].get(source)


def recovery_actions(state: State) -> list[Action]:
    """The admin recovery transitions that apply to a request in `state` (for the menus)."""
    return [
        t.action for t in TRANSITIONS.values()
        if t.recovery and target_of(t.action, state) is not None
    ]


def acting_role(state: State) -> Role | None:
    return STATES[state].acting_role
