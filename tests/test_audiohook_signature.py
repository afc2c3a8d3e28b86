"""Tests for the AudioHook HTTP message signature verifier and the upgrade check built on it."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.platforms.audiohook import AudioHookOptions, check_upgrade
from mediaproxy.platforms.audiohook_signature import decode_client_secret, verify_signature
from mediaproxy.platforms.base import UpgradeRefused, UpgradeRequest
from mediaproxy.platforms.structured_fields import parse_dictionary

# The spec's test vector (session and correlation ids as in the notes, not the swapped page).
VECTOR_TARGET = "/api/v1/voicebiometrics/ws"
VECTOR_HOST = "audiohook.example.com"
VECTOR_SECRET = "TXlTdXBlclNlY3JldEtleVRlbGxOby0xITJAMyM0JDU="
VECTOR_KEY = "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh"
VECTOR_CREATED = 1641013200
VECTOR_HEADERS = {
    "audiohook-organization-id": "d7934305-0972-4844-938e-9060eef73d05",
    "audiohook-session-id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "audiohook-correlation-id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "x-api-key": VECTOR_KEY,
    "signature-input": (
        'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
        '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
        'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430'
    ),
    "signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
}

COMPONENTS = ('"@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
              '"audiohook-correlation-id" "x-api-key"')
SECRET = b"a client secret of some length!!"
API_KEY = "bXlBcGlLZXk="
NOW = 1767312000
BASE_HEADERS = {
    "host": "proxy.example.net",
    "audiohook-organization-id": "6f1c2a9e-3b7d-4c21-9a55-0d2e8b4f7a10",
    "audiohook-session-id": "c2d8f4a1-7e39-4b6a-8f20-5a1b9c3d6e77",
    "audiohook-correlation-id": "91ab0c3e-2f4d-4e8a-b7c6-1d2e3f4a5b6c",
    "x-api-key": API_KEY,
}


def signed(target: str = "/genesys/audiohook?tenant=acme", authority: str = "proxy.example.net",
           secret: bytes = SECRET, created: int = NOW, expires: int | None = None, keyid: str = API_KEY,
           nonce: str = "Zm9vYmFyYmF6cXV4cXV1eHh5", alg: str = "hmac-sha256",
           components: str = COMPONENTS, **header_changes: str) -> dict[str, str]:
    """Headers of a request signed the way Genesys signs it (the base built independently)."""
    headers = dict(BASE_HEADERS, **header_changes)
    expires = created + 30 if expires is None else expires
    params = (f'({components});keyid="{keyid}";nonce="{nonce}";alg="{alg}";'
              f"created={created};expires={expires}")
    values = {"@request-target": target, "@authority": authority}
    lines = [f'"{name}": {values.get(name) or headers[name]}'
             for name in (c.strip('"') for c in components.split())]
    lines.append(f'"@signature-params": {params}')
    mac = hmac.new(secret, "\n".join(lines).encode(), hashlib.sha256).digest()
    headers["signature-input"] = f"sig1={params}"
    headers["signature"] = f"sig1=:{base64.b64encode(mac).decode()}:"
    return headers


class VerifierTests(SynchronousTestCase):
    def verify(self, headers: dict[str, str], now: float = NOW, target: str = "/genesys/audiohook?tenant=acme",
               authority: str = "proxy.example.net", secret: bytes = SECRET) -> Any:
        return verify_signature(headers, target, authority, secret, now)

    def assertFails(self, check: Any, reason: str) -> None:
        self.assertFalse(check.ok)
        self.assertEqual(check.reason, reason, check.detail)

    def test_spec_vector(self) -> None:
        check = verify_signature(VECTOR_HEADERS, VECTOR_TARGET, VECTOR_HOST,
                                 decode_client_secret(VECTOR_SECRET), VECTOR_CREATED)
        self.assertTrue(check.ok, check)

    def test_spec_vector_tampered(self) -> None:
        """Each covered value matters: change one and the vector no longer verifies."""
        secret = decode_client_secret(VECTOR_SECRET)
        swapped = dict(VECTOR_HEADERS)
        swapped["audiohook-session-id"], swapped["audiohook-correlation-id"] = (
            VECTOR_HEADERS["audiohook-correlation-id"], VECTOR_HEADERS["audiohook-session-id"])
        self.assertFails(verify_signature(swapped, VECTOR_TARGET, VECTOR_HOST, secret, VECTOR_CREATED), "mismatch")
        self.assertFails(verify_signature(VECTOR_HEADERS, VECTOR_TARGET + "?x=1", VECTOR_HOST, secret,
                                          VECTOR_CREATED), "mismatch")
        self.assertFails(verify_signature(VECTOR_HEADERS, VECTOR_TARGET, "audiohook.example.com:8443", secret,
                                          VECTOR_CREATED), "mismatch")
        self.assertFails(verify_signature(VECTOR_HEADERS, VECTOR_TARGET, VECTOR_HOST, b"other", VECTOR_CREATED),
                         "mismatch")

    def test_signed_request_passes(self) -> None:
        self.assertTrue(self.verify(signed()).ok)

    def test_authority_is_case_insensitive(self) -> None:
        self.assertTrue(self.verify(signed(), authority="Proxy.Example.NET").ok)

    def test_header_values_are_trimmed(self) -> None:
        headers = signed()
        headers["audiohook-session-id"] = "  " + headers["audiohook-session-id"] + " "
        self.assertTrue(self.verify(headers).ok)

    def test_clock_window(self) -> None:
        self.assertTrue(self.verify(signed(), now=NOW + 10).ok)
        self.assertTrue(self.verify(signed(), now=NOW - 3).ok)
        self.assertFails(self.verify(signed(), now=NOW + 11), "too_old")
        self.assertFails(self.verify(signed(), now=NOW - 4), "created_in_future")

    def test_expired(self) -> None:
        self.assertFails(self.verify(signed(expires=NOW + 5), now=NOW + 6), "expired")

    def test_wrong_keyid(self) -> None:
        self.assertFails(self.verify(signed(keyid="c29tZU90aGVyS2V5")), "keyid_mismatch")

    def test_short_nonce(self) -> None:
        self.assertFails(self.verify(signed(nonce="c2hvcnRub25jZQ==")), "bad_nonce")
        self.assertTrue(self.verify(signed(nonce="x" * 22)).ok)

    def test_bad_alg(self) -> None:
        self.assertFails(self.verify(signed(alg="rsa-pss-sha512")), "bad_alg")

    def test_missing_component(self) -> None:
        fewer = COMPONENTS.replace(' "audiohook-correlation-id"', "")
        self.assertFails(self.verify(signed(components=fewer)), "missing_component")

    def test_duplicate_component(self) -> None:
        self.assertFails(self.verify(signed(components=COMPONENTS + ' "x-api-key"')), "malformed")

    def test_tampered_header(self) -> None:
        headers = signed()
        headers["audiohook-organization-id"] = "11111111-2222-4333-8444-555555555555"
        self.assertFails(self.verify(headers), "mismatch")

    def test_wrong_secret(self) -> None:
        self.assertFails(self.verify(signed(secret=b"another secret")), "mismatch")

    def test_unsigned(self) -> None:
        self.assertFails(self.verify(dict(BASE_HEADERS)), "unsigned")

    def test_malformed_headers(self) -> None:
        good = signed()
        for name, value in [("signature", "sig1=:not base64!:"), ("signature", "sig2=:AAAA:"),
                            ("signature-input", 'sig1="just a string"'), ("signature-input", "sig1=(\"a\""),
                            ("signature-input", good["signature-input"] + ";extra=1"),
                            ("signature-input", good["signature-input"].replace("created=", "created=\"")),
                            ("signature", "")]:
            headers = dict(good, **{name: value})
            self.assertFails(self.verify(headers), "malformed")

    def test_parse_dictionary_keeps_raw_member_text(self) -> None:
        members = parse_dictionary('a=("x" "y");k="v", b=:AAE=:, c')
        self.assertEqual(members["a"].raw, '("x" "y");k="v"')
        self.assertEqual(members["b"].value.value, b"\x00\x01")  # type: ignore[union-attr]
        self.assertIs(members["c"].value.value, True)  # type: ignore[union-attr]


def settings(**options: Any) -> AudioHookOptions:
    return AudioHookOptions(**options)


class CheckUpgradeTests(SynchronousTestCase):
    def request(self, headers: dict[str, str], target: str = "/genesys/audiohook?tenant=acme",
                host: str = "proxy.example.net", public_url: str = "") -> UpgradeRequest:
        return UpgradeRequest(target, host, headers, public_url)

    def assertRefused(self, request: UpgradeRequest, config: AudioHookOptions, code: int = 401) -> None:
        error = self.assertRaises(UpgradeRefused, check_upgrade, request, config, NOW)
        self.assertEqual(error.code, code)

    def test_open_endpoint(self) -> None:
        check_upgrade(self.request(dict(BASE_HEADERS)), settings(), NOW)

    def test_api_key(self) -> None:
        config = settings(api_key=API_KEY)
        check_upgrade(self.request(dict(BASE_HEADERS)), config, NOW)
        self.assertRefused(self.request(dict(BASE_HEADERS, **{"x-api-key": "d3Jvbmc="})), config)
        headers = dict(BASE_HEADERS)
        del headers["x-api-key"]
        self.assertRefused(self.request(headers), config)

    def test_signature_required_with_secret(self) -> None:
        config = settings(api_key=API_KEY, client_secret=SECRET)
        check_upgrade(self.request(signed()), config, NOW)
        self.assertRefused(self.request(dict(BASE_HEADERS)), config)
        self.assertRefused(self.request(signed()), settings(client_secret=b"other"))
        self.assertRefused(self.request(signed(created=NOW - 60)), config)

    def test_secret_without_api_key_setting(self) -> None:
        """keyid still has to equal the X-API-KEY that was sent."""
        config = settings(client_secret=SECRET)
        check_upgrade(self.request(signed()), config, NOW)
        self.assertRefused(self.request(signed(keyid="b3RoZXI=")), config)

    def test_rewritten_host_falls_back_to_public_url(self) -> None:
        config = settings(client_secret=SECRET)
        behind_proxy = self.request(signed(), host="10.0.0.5:8080")
        self.assertRefused(behind_proxy, config)
        check_upgrade(self.request(signed(), host="10.0.0.5:8080", public_url="wss://proxy.example.net"), config, NOW)
        on_port = self.request(signed(authority="proxy.example.net:8443"), host="10.0.0.5:8080",
                               public_url="wss://Proxy.example.net:8443")
        check_upgrade(on_port, config, NOW)

    def test_session_id_header_must_be_a_uuid(self) -> None:
        headers = dict(BASE_HEADERS, **{"audiohook-session-id": "nope"})
        self.assertRefused(self.request(headers), settings(), code=400)
