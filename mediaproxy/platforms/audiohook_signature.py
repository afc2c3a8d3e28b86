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
from typing import Union

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


# --- a strict parser for the subset of RFC 8941 structured fields that signatures use ---------

BareItem = Union[str, int, bool, bytes, "Token"]


@dataclass(frozen=True)
class Token:
    """An RFC 8941 token (kept apart from strings so that ``"x"`` and ``x`` differ)."""

    value: str


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Member:
    """One dictionary member, with the raw text of its value as it was carried."""

    value: Item | InnerList
    raw: str


class _SyntaxError(ValueError):
    pass


_KEY_START = re.compile(r"[a-z*]")
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")


class _FieldParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _skip_ows(self) -> None:
        while self._peek() in (" ", "\t"):
            self.pos += 1

    def _skip_sp(self) -> None:
        while self._peek() == " ":
            self.pos += 1

    def dictionary(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        self._skip_sp()
        while self.pos < len(self.text):
            key = self._key()
            start = self.pos
            if self._peek() == "=":
                self.pos += 1
                start = self.pos
                value: Item | InnerList = self._inner_list() if self._peek() == "(" else self._item()
            else:
                value = Item(True, self._params())
            members[key] = Member(value, self.text[start:self.pos])
            self._skip_ows()
            if self.pos >= len(self.text):
                break
            if self._peek() != ",":
                raise _SyntaxError(f"expected ',' at {self.pos}")
            self.pos += 1
            self._skip_ows()
            if self.pos >= len(self.text):
                raise _SyntaxError("trailing comma")
        return members

    def _key(self) -> str:
        match = _KEY.match(self.text, self.pos)
        if match is None:
            raise _SyntaxError(f"expected a key at {self.pos}")
        self.pos = match.end()
        return match.group()

    def _inner_list(self) -> InnerList:
        self.pos += 1  # "("
        items: list[Item] = []
        while True:
            self._skip_sp()
            if self._peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self._params())
            items.append(self._item())
            if self._peek() not in (" ", ")"):
                raise _SyntaxError(f"expected ' ' or ')' at {self.pos}")

    def _item(self) -> Item:
        return Item(self._bare_item(), self._params())

    def _params(self) -> tuple[tuple[str, BareItem], ...]:
        params: list[tuple[str, BareItem]] = []
        while self._peek() == ";":
            self.pos += 1
            self._skip_sp()
            key = self._key()
            value: BareItem = True
            if self._peek() == "=":
                self.pos += 1
                value = self._bare_item()
            params.append((key, value))
        return tuple(params)

    def _bare_item(self) -> BareItem:
        c = self._peek()
        if c == '"':
            return self._string()
        if c == ":":
            end = self.text.find(":", self.pos + 1)
            if end < 0:
                raise _SyntaxError("unterminated byte sequence")
            encoded = self.text[self.pos + 1:end]
            self.pos = end + 1
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise _SyntaxError("bad base64 in byte sequence") from None
        if c == "?":
            flag = self.text[self.pos + 1:self.pos + 2]
            if flag not in ("0", "1"):
                raise _SyntaxError("bad boolean")
            self.pos += 2
            return flag == "1"
        if c == "-" or c.isdigit():
            match = _INTEGER.match(self.text, self.pos)
            if match is None or (match.end() < len(self.text) and self.text[match.end()] in ".0123456789"):
                raise _SyntaxError("bad integer (decimals are not used in signatures)")
            self.pos = match.end()
            return int(match.group())
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise _SyntaxError(f"unexpected character at {self.pos}")
        self.pos = match.end()
        return Token(match.group())

    def _string(self) -> str:
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == "\\":
                escaped = self._peek()
                if escaped not in ('"', "\\") or not escaped:
                    raise _SyntaxError("bad escape in string")
                out.append(escaped)
                self.pos += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise _SyntaxError("non-ASCII character in string")
            else:
                out.append(c)
        raise _SyntaxError("unterminated string")


def parse_dictionary(text: str) -> dict[str, Member]:
    """Parse an RFC 8941 dictionary field. Raises ``ValueError`` when it is malformed."""
    return _FieldParser(text.strip()).dictionary()


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
    except ValueError as e:
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
