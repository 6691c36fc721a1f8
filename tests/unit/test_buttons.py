"""Every action a service can attach to a notification packs into Telegram's 64 bytes."""

from __future__ import annotations

import pytest

from handlers.buttons import RetryDeadLettersLike, pack_action
from services.actions import Action, ActionName

LARGEST_ID = 2**63 - 1  # BigInteger keys


@pytest.mark.parametrize("name", list(ActionName))
def test_every_action_fits_in_callback_data_with_the_largest_id(name: ActionName) -> None:
    packed = pack_action(Action(name, LARGEST_ID))
    assert len(packed.encode()) <= 64


def test_retry_button_round_trips_to_the_notification_it_names() -> None:
    packed = pack_action(Action(ActionName.RETRY_DEAD_LETTERS_LIKE, 4242))
    assert RetryDeadLettersLike.unpack(packed).target == 4242


def test_a_payload_button_round_trips_through_json_shapes() -> None:
    action = Action(ActionName.RETRY_DEAD_LETTERS_LIKE, 7)
    assert Action.from_payload(action.as_payload("Retry failed")) == action


def test_an_unknown_action_in_a_stored_button_is_refused() -> None:
    with pytest.raises(ValueError):
        Action.from_payload({"text": "x", "action": "format_disk", "target": 1})
