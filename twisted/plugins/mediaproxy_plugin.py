"""Registers ``twistd mediaproxy`` (no __init__.py here: twisted.plugins is a namespace)."""

from twisted.application.service import ServiceMaker

mediaproxy = ServiceMaker(
    "mediaproxy",
    "mediaproxy.tap",
    "Media proxy between contact-center platforms and AI voice backends",
    "mediaproxy",
)
