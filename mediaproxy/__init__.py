"""mediaproxy: a Twisted media proxy between contact-center platforms and AI voice backends."""

__version__ = "0.2.0"
