"""The platform and backend types the proxy knows: one explicit table each.

A new platform or backend is one module that defines its :class:`PlatformType` or
:class:`BackendType` (options dataclass, upgrade check, session or backend factory, ...) plus one
line here. Configuration (``[platform:NAME] type = ...``) looks types up in these tables, the
reference in ``docs/configuration.md`` is generated from them, and nothing else in the proxy
names a platform or a backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mediaproxy.backends.base import BackendType
from mediaproxy.backends.bot_websocket import BOT_WEBSOCKET
from mediaproxy.backends.deepgram import DEEPGRAM
from mediaproxy.backends.echo import ECHO
from mediaproxy.backends.elevenlabs import ELEVENLABS
from mediaproxy.backends.gemini import GEMINI
from mediaproxy.backends.openai import OPENAI_REALTIME
from mediaproxy.platforms.asterisk import ASTERISK
from mediaproxy.platforms.audiocodes import AUDIOCODES
from mediaproxy.platforms.audiohook import AUDIOHOOK
from mediaproxy.platforms.base import PlatformType
from mediaproxy.platforms.exotel import EXOTEL
from mediaproxy.platforms.freeswitch import FREESWITCH
from mediaproxy.platforms.jambonz import JAMBONZ
from mediaproxy.platforms.plivo import PLIVO
from mediaproxy.platforms.telnyx import TELNYX
from mediaproxy.platforms.twilio import TWILIO
from mediaproxy.platforms.vonage import VONAGE
from mediaproxy.platforms.websocket_client import WEBSOCKET

# One type per line: adding one is one line here (and its import).
PLATFORM_TYPES: Mapping[str, PlatformType[Any]] = {t.name: t for t in (
    TWILIO,
    AUDIOHOOK,
    AUDIOCODES,
    TELNYX,
    PLIVO,
    EXOTEL,
    VONAGE,
    JAMBONZ,
    WEBSOCKET,
    ASTERISK,
    FREESWITCH,
)}
BACKEND_TYPES: Mapping[str, BackendType[Any]] = {t.name: t for t in (
    ECHO,
    OPENAI_REALTIME,
    DEEPGRAM,
    GEMINI,
    BOT_WEBSOCKET,
    ELEVENLABS,
)}
