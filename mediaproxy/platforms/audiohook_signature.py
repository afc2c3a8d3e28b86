"""Verification of the HTTP message signature Genesys puts on an AudioHook WebSocket upgrade.

Genesys signs the upgrade request (an RFC 9421-style signature, HMAC-SHA256 keyed with the
base64-decoded client secret) when the integration has a client secret::

    Signature-Input: sig1=("@request-target" "@authority" "audiohook-organization-id"
        "audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="<api key>";
        nonce="<base64>";alg="hmac-sha256";created=<unix s>;expires=<unix s>
    Signature: sig1=:<base64 HMAC>:

The signed text is one line per covered component, ``"<name>": <value>``, then
``"@signature-params": <the inner list exactly as carried after "sig1=">``, joined with ``\\n``.
The policy is the reference verifier's: all six components covered, ``keyid`` equal to
``X-API-KEY``, nonce of at least 22 characters, ``alg`` hmac-sha256, ``created`` at most 3 s in the
future and at most 10 s old, not expired, constant-time comparison.

Both headers are RFC 8941 dictionaries, parsed by :mod:`mediaproxy.platforms.structured_fields`.

This module is pure: time arrives as an argument and nothing here sleeps. Delaying a failed
answer to at least 500 ms from the start of verification (so failures cannot be timed) is the
WebSocket glue's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mediaproxy.platforms.structured_fields import BareItem, InnerList, Item, StructuredFieldError, parse_dictionary

__all__ = ["SignatureCheck", "verify_signature", "REQUIRED_COMPONENTS", "decode_client_secret"]

REQUIRED_COMPONENTS: tuple[str, ...] = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
_DERIVED = frozenset({"@request-target", "@authority"})
_MIN_NONCE_CHARS = 22
# Real Genesys and the reference signer always use this; anything else is refused.
_ALG = "hmac-sha256"


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one request. ``reason`` is a short bounded label (for logs and metrics),
    ``detail`` a human explanation; both are empty when ``ok``."""

    ok: bool
    reason: str = ""
    detail: str = ""


_OK = SignatureCheck(True)


def _fail(reason: str, detail: str) -> SignatureCheck:
    return SignatureCheck(False, reason, detail)


def decode_client_secret(text: str) -> bytes:
    """Decode a configured client secret (standard base64, padding optional). Raises
    ``ValueError`` with a message for the user when it is not base64."""
    stripped = text.strip()
    if not stripped:
        return b""
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("client_secret must be base64") from None


# --- the verifier -------------------------------------------------------------------------------


def _canonical(value: str) -> str:
    # RFC 9421 §2.1: trim, and fold obsolete line folding into one space.
    return re.sub(r"[ \t]*\r\n[ \t]+", " ", value.strip())


def verify_signature(
    headers: Mapping[str, str],
    target: str,
    authority: str,
    client_secret: bytes,
    now: float,
    *,
    max_age_s: float = 10.0,
    max_skew_s: float = 3.0,
) -> SignatureCheck:
    """Check the signature of an AudioHook upgrade request.

    ``headers`` maps lower-cased names to values (repeated headers already joined with ", ");
    ``target`` is the raw request target (path and query as sent); ``authority`` the ``Host``
    value as Genesys addressed us; ``client_secret`` the decoded secret; ``now`` Unix time in
    seconds. ``created`` may lie at most ``max_skew_s`` in the future and ``max_age_s`` in the past.
    """
    signature_input = headers.get("signature-input", "")
    signature_field = headers.get("signature", "")
    if not signature_input and not signature_field:
        return _fail("unsigned", "no Signature and Signature-Input headers")
    if not signature_input or not signature_field:
        return _fail("malformed", "Signature and Signature-Input must come together")
    try:
        inputs = parse_dictionary(signature_input)
        signatures = parse_dictionary(signature_field)
    except StructuredFieldError as e:
        return _fail("malformed", f"cannot parse signature headers: {e}")
    if not inputs:
        return _fail("malformed", "Signature-Input is empty")
    label, member = next(iter(inputs.items()))
    covered = member.value
    if not isinstance(covered, InnerList):
        return _fail("malformed", "Signature-Input member is not an inner list")
    signed = signatures.get(label)
    if signed is None or not isinstance(signed.value, Item) or not isinstance(signed.value.value, bytes):
        return _fail("malformed", f"no byte-sequence signature labelled {label}")
    expected_mac = signed.value.value

    params: dict[str, BareItem] = {}
    for key, value in covered.params:
        if key not in ("keyid", "nonce", "alg", "created", "expires") or key in params:
            return _fail("malformed", f"unknown or repeated signature parameter {key}")
        want = int if key in ("created", "expires") else str
        if type(value) is not want:
            return _fail("malformed", f"signature parameter {key} has the wrong type")
        params[key] = value

    names: list[str] = []
    for item in covered.items:
        if not isinstance(item.value, str) or item.params:
            return _fail("malformed", "covered components must be plain strings")
        if item.value in names:
            return _fail("malformed", f"component {item.value} is listed twice")
        if item.value.startswith("@") and item.value not in _DERIVED:
            return _fail("unsupported_component", f"derived component {item.value} is not supported")
        names.append(item.value)
    missing = [name for name in REQUIRED_COMPONENTS if name not in names]
    if missing:
        return _fail("missing_component", f"signature does not cover {', '.join(missing)}")

    alg = params.get("alg", _ALG)
    if alg != _ALG:
        return _fail("bad_alg", f"unsupported alg {alg!r}")
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or len(nonce) < _MIN_NONCE_CHARS:
        return _fail("bad_nonce", f"nonce must have at least {_MIN_NONCE_CHARS} characters")
    created = params.get("created")
    if not isinstance(created, int):
        return _fail("malformed", "signature has no created time")
    if created > now + max_skew_s:
        return _fail("created_in_future", f"created {created} is more than {max_skew_s:g} s ahead of {now:.0f}")
    if now - created > max_age_s:
        return _fail("too_old", f"created {created} is more than {max_age_s:g} s before {now:.0f}")
    expires = params.get("expires")
    if isinstance(expires, int) and now > expires:
        return _fail("expired", f"expired at {expires}, now {now:.0f}")

    lines: list[str] = []
    for name in names:
        if name == "@request-target":
            value = target
        elif name == "@authority":
            value = authority.strip().lower()
        else:
            header = headers.get(name)
            if header is None:
                return _fail("missing_component", f"covered header {name} is absent")
            value = _canonical(header)
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {member.raw}')
    computed = hmac.new(client_secret, "\n".join(lines).encode("utf-8"), hashlib.sha256).digest()
    # Both comparisons always run, so the time taken does not tell which one failed.
    keyid = params.get("keyid")
    keyid_ok = hmac.compare_digest(
        str(keyid).encode("utf-8"), _canonical(headers.get("x-api-key", "")).encode("utf-8")
    ) and isinstance(keyid, str)
    mac_ok = hmac.compare_digest(computed, expected_mac)
    if not keyid_ok:
        return _fail("keyid_mismatch", "keyid does not equal X-API-KEY")
    if not mac_ok:
        return _fail("mismatch", "signature does not match")
    return _OK
