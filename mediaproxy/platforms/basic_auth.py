"""HTTP Basic authentication of a platform's WebSocket upgrade, for the platforms whose dialler
can only be given a user name and a password (Asterisk's ``websocket_client.conf``, jambonz's
``wsAuth``, the credentials in Exotel's applet URL).

With both halves configured the upgrade must carry ``Authorization: Basic
base64(user:password)``, compared in constant time; with neither, anything is accepted (the
operator relies on the network); one without the other is a configuration error.
"""

from __future__ import annotations

import base64
import hmac

from mediaproxy.options import OptionError
from mediaproxy.platforms.base import UpgradeRefused, UpgradeRequest


def check_basic_auth(request: UpgradeRequest, user: str, password: str) -> None:
    """Refuse the upgrade (HTTP 401) unless it carries ``user:password`` as Basic
    authorization; accept anything when either is empty."""
    if not (user and password):
        return
    given = request.headers.get("authorization", "")
    if not given:
        raise UpgradeRefused(401, "missing Authorization")
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise UpgradeRefused(401, "bad Authorization")


def require_both_halves(user_key: str, user: str, password_key: str, password: str,
                        scheme: str = "Basic auth") -> None:
    """Raise :class:`~mediaproxy.options.OptionError` (naming the missing key) when only one of
    the two credential options is set; ``scheme`` names what needs both, for the message."""
    if bool(user) != bool(password):
        raise OptionError(password_key if user else user_key,
                          f"{user_key} and {password_key} are set together ({scheme} needs both)")
