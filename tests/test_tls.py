"""A TLS listener (``listen = ssl:...``) with a self-signed certificate made in the test: a whole
echo call over ``wss://`` that trusts exactly that certificate, and a client that does not trust
it gets no call."""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any

from autobahn.twisted.websocket import connectWS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial.unittest import TestCase

from mediaproxy.config import parse_config
from mediaproxy.service import MediaProxyService
from tests.support import LoopbackService
from tests.test_loopback_twilio import QUIET, SPEECH, ScriptedTwilioFactory, media_count


def self_signed(directory: str) -> tuple[str, str, bytes]:
    """A P-256 key and a certificate for 127.0.0.1 and localhost, valid for a day; returns
    (key path, certificate path, certificate PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory)
    key_path, cert_path = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with open(cert_path, "wb") as f:
        f.write(pem)
    return key_path, cert_path, pem


class TlsListenerTests(LoopbackService, TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        key, cert, self.pem = self_signed(os.path.abspath(self.mktemp()))
        # Endpoint strings escape ":" and "=" in paths; these temp paths have neither.
        cfg = parse_config("test.ini", {
            "proxy": {"listen": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}", "drain_seconds": "1"},
            "metrics": {"listen": "tcp:0:interface=127.0.0.1"},
            "platform:twilio": {"path": "/twilio", "backend": "echo"},
            "backend:echo": {"type": "echo", "silence_ms": "200"},
        }, {})
        address, _ = yield self.start_service(MediaProxyService(cfg, reactor, tune_gc=False))
        self.url = f"wss://127.0.0.1:{address.port}/twilio"

    def tearDown(self) -> Any:
        return self.stop_service()

    @inlineCallbacks
    def test_a_whole_echo_call_over_tls(self) -> Any:
        factory = ScriptedTwilioFactory(self.url)
        tls = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(self.pem))
        connectWS(factory, contextFactory=tls)
        client = yield factory.opened
        client.send_audio([SPEECH] * 20 + [QUIET] * 15)
        received = yield factory.wait_for(lambda msgs: media_count(msgs) >= 10)
        self.assertTrue(any(m["event"] == "media" for m in received))
        client.send({"event": "stop", "streamSid": "MZ1"})
        code = yield factory.closed
        self.assertEqual(code, 1000)
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 1)

    @inlineCallbacks
    def test_a_client_that_does_not_trust_the_certificate_gets_no_call(self) -> Any:
        factory = ScriptedTwilioFactory(self.url)
        # The platform trusts only the system's roots: the self-signed certificate fails.
        connectWS(factory, contextFactory=optionsForClientTLS("127.0.0.1"))
        yield factory.closed
        self.assertFalse(factory.opened.called)
        self.assertEqual(self.metric("calls_total", platform="twilio", outcome="completed"), 0)
