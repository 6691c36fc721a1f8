"""A WhatsApp-only customer who later shares the same number from Telegram becomes one person:
the Telegram user keeps their chat and gains the customer's history, the STOP they sent stays
honoured, and the merge is audited; what Telegram was sent and what the database holds."""

from __future__ import annotations

from sqlalchemy import func, select

from database.models import InboundMessage, TransactionLog, User
from services import whatsapp_inbound
from services.whatsapp_inbound import InboundWorker, Received
from tests.conversations.conftest import StartConversation

ANN = 2001


async def test_sharing_a_whatsapp_customers_number_merges_instead_of_refusing(
    conversation: StartConversation,
) -> None:
    chat = await conversation()
    db, clock = chat.db, chat.clock
    messages = [
        Received(phone="33612345678", wamid="wamid.HELLO", text="Hello", at=clock.now(),
                 profile_name="Ann on WhatsApp"),
        Received(phone="33612345678", wamid="wamid.STOP", text="STOP", at=clock.now()),
    ]
    assert await whatsapp_inbound.store(db, messages, clock.now()) == 2
    assert await InboundWorker(db, clock, owner="test").drain() == 2

    replies = await chat.send(ANN, "", contact={"phone_number": "33612345678"})
    replies.message("phone number is saved")

    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 1
        ann = (await session.scalars(select(User).where(User.telegram_id == ANN))).one()
        assert (ann.phone, ann.opt_outs) == ("+33612345678", "whatsapp")
        owners = set(await session.scalars(select(InboundMessage.user_id)))
        merges = list(await session.scalars(select(TransactionLog.operation).where(
            TransactionLog.operation == "contacts.merge")))
    assert owners == {ann.id}
    assert merges == ["contacts.merge"]
