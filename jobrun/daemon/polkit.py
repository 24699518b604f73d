"""Authorization through polkit's CheckAuthorization, for jobrund's own actions (polkit/)."""

from __future__ import annotations

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..errors import PermissionDenied

ACTION_START = "org.jobrun.start"
ACTION_MANAGE_OWN = "org.jobrun.manage-own"
ACTION_MANAGE_ALL = "org.jobrun.manage-all"

ALLOW_USER_INTERACTION = 1


async def check(bus: MessageBus, sender: str, action: str, interactive: bool = False) -> bool:
    """Whether the bus client `sender` is authorized for `action` (raises if polkit fails)."""
    reply = await bus.call(
        Message(
            destination="org.freedesktop.PolicyKit1",
            path="/org/freedesktop/PolicyKit1/Authority",
            interface="org.freedesktop.PolicyKit1.Authority",
            member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us",
            body=[
                ["system-bus-name", {"name": Variant("s", sender)}],
                action,
                {},
                ALLOW_USER_INTERACTION if interactive else 0,
                "",
            ],
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply is not None and reply.body else "no reply"
        raise PermissionDenied(
            f"cannot check authorization with polkit: {text}",
            "is polkitd installed? (systemctl status polkit)",
        )
    authorized, _challenge, _details = reply.body[0]
    return bool(authorized)
