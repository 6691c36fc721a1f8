"""aiogram routers, thin: parse the update, call a service, answer.

Every module builds its router afresh in `setup()`, so a process (a test) can build as many
Dispatchers as it likes.
"""

from aiogram import Router

from handlers import (
    admin,
    common,
    errors,
    operators,
    privacy,
    profile,
    requests,
    start,
    support,
)


def get_routers() -> list[Router]:
    """The production routers, in the order they are tried. The catch-all comes last."""
    return [
        # privacy before support and the forms: /mydata and /forget work in any of them.
        errors.setup(), operators.setup(), privacy.setup(), support.setup(), start.setup(),
        profile.setup(),
        admin.setup(), requests.setup(), common.setup(),
    ]
