"""A strict parser for the subset of RFC 8941 (Structured Field Values for HTTP) that HTTP message
signatures use: the ``Signature-Input`` and ``Signature`` dictionaries.

Parsed: dictionaries, inner lists, parameters, and the bare items integer, string, token, byte
sequence and boolean, following the parsing algorithms of RFC 8941 §4.2. Not parsed: lists as a
top-level field type, items as a top-level field type, and decimals (a decimal is refused).

Every malformed input raises :class:`StructuredFieldError`; no other exception escapes
:func:`parse_dictionary`.

Differences from RFC 8941, all deliberate:

* Parameters are returned as an ordered tuple of ``(key, value)`` pairs with repeated keys kept,
  so that a caller (the signature verifier) can refuse a repeated parameter; RFC 8941 would keep
  the last value. Repeated dictionary keys follow the RFC: the last value wins, in the position of
  the first.
* Each dictionary member keeps the raw text of its value as it was carried (:attr:`Member.raw`),
  because RFC 9421 signs the ``Signature-Input`` member exactly as sent.
* Leading and trailing SP and HTAB around the whole field are discarded (an HTTP layer that did not
  trim OWS still parses); RFC 8941 discards SP only, relying on HTTP having trimmed OWS.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "BareItem", "InnerList", "Item", "Member", "Parameters", "StructuredFieldError", "Token",
    "parse_dictionary",
]


@dataclass(frozen=True)
class Token:
    """An RFC 8941 token (kept apart from strings so that ``"x"`` and ``x`` differ)."""

    value: str


BareItem: TypeAlias = str | int | bool | bytes | Token
Parameters: TypeAlias = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    value: BareItem
    params: Parameters


@dataclass(frozen=True)
class InnerList:
    items: tuple[Item, ...]
    params: Parameters


@dataclass(frozen=True)
class Member:
    """One dictionary member, with the raw text of its value as it was carried."""

    value: Item | InnerList
    raw: str


class StructuredFieldError(ValueError):
    """The field is not a valid RFC 8941 structure (or uses a part this parser does not support).
    The message names the problem and the character offset in the (trimmed) field."""


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DIGITS = "0123456789"


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
                raise StructuredFieldError(f"expected ',' at {self.pos}")
            self.pos += 1
            self._skip_ows()
            if self.pos >= len(self.text):
                raise StructuredFieldError("trailing comma")
        return members

    def _key(self) -> str:
        match = _KEY.match(self.text, self.pos)
        if match is None:
            raise StructuredFieldError(f"expected a key at {self.pos}")
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
            if not self._peek():
                raise StructuredFieldError("unterminated inner list")
            items.append(self._item())
            if self._peek() not in (" ", ")"):
                raise StructuredFieldError(f"expected ' ' or ')' at {self.pos}")

    def _item(self) -> Item:
        return Item(self._bare_item(), self._params())

    def _params(self) -> Parameters:
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
        if not c:
            raise StructuredFieldError("expected an item at the end of the field")
        if c == "-" or c in _DIGITS:
            return self._integer()
        if c == '"':
            return self._string()
        if c == ":":
            return self._byte_sequence()
        if c == "?":
            flag = self.text[self.pos + 1:self.pos + 2]
            if flag not in ("0", "1"):
                raise StructuredFieldError(f"bad boolean at {self.pos}")
            self.pos += 2
            return flag == "1"
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            raise StructuredFieldError(f"unexpected character at {self.pos}")
        self.pos = match.end()
        return Token(match.group())

    def _integer(self) -> int:
        match = _INTEGER.match(self.text, self.pos)
        if match is None:
            raise StructuredFieldError(f"bad integer at {self.pos}")
        following = self.text[match.end():match.end() + 1]
        if following and following in "." + _DIGITS:
            raise StructuredFieldError(f"integer longer than 15 digits or a decimal at {self.pos}")
        self.pos = match.end()
        return int(match.group())

    def _byte_sequence(self) -> bytes:
        end = self.text.find(":", self.pos + 1)
        if end < 0:
            raise StructuredFieldError("unterminated byte sequence")
        encoded = self.text[self.pos + 1:end]
        if _BASE64.fullmatch(encoded) is None:
            raise StructuredFieldError(f"bad base64 in byte sequence at {self.pos}")
        # RFC 8941 §4.2.7: parsers SHOULD NOT fail when "=" padding is absent.
        unpadded = encoded.rstrip("=")
        if len(unpadded) % 4 == 1:
            raise StructuredFieldError(f"bad base64 length in byte sequence at {self.pos}")
        try:
            value = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise StructuredFieldError(f"bad base64 in byte sequence at {self.pos}") from None
        self.pos = end + 1
        return value

    def _string(self) -> str:
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == "\\":
                escaped = self._peek()
                if not escaped or escaped not in ('"', "\\"):
                    raise StructuredFieldError(f"bad escape in string at {self.pos}")
                out.append(escaped)
                self.pos += 1
            elif c == '"':
                return "".join(out)
            elif not (" " <= c <= "~"):
                raise StructuredFieldError(f"character outside printable ASCII in string at {self.pos - 1}")
            else:
                out.append(c)
        raise StructuredFieldError("unterminated string")


def parse_dictionary(text: str) -> dict[str, Member]:
    """Parse an RFC 8941 dictionary field (an empty field is an empty dictionary). Raises
    :class:`StructuredFieldError` when it is malformed."""
    return _FieldParser(text.strip(" \t")).dictionary()
