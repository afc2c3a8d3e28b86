"""Per-frame CPU cost of the proxy's Twilio path, in process, without network or simulator.

Feeds real masked WebSocket frames (Twilio ``media`` messages) to the real Autobahn glue,
session, bridge and echo backend, and drives the playout with a ``task.Clock``, so the figures
are CPU time of the proxy's own code and do not depend on what else the machine is doing.

    python bench/bench_frame_path.py [--calls 150] [--seconds 20] [--message-ms 20] [--profile out.prof]

Prints µs of CPU per inbound media frame and per outbound message (``--message-ms``: ``[playout]
message_ms``, 20 = one frame per message), and the implied core share at the given number of
concurrent calls (each call: 50 inbound frames/s; parrot replies about half the time).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import os
import struct
import sys
import time

# This checkout's package, not whichever one the environment has installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from mediaproxy.calls import CallContext, CallRegistry, Endpoint  # noqa: E402
from mediaproxy.config import parse_config  # noqa: E402
from mediaproxy.metrics import Metrics  # noqa: E402
from mediaproxy.playout import PlayoutClock  # noqa: E402
from mediaproxy.server.websocket import PlatformServerFactory  # noqa: E402

UPGRADE = (
    b"GET /twilio HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a client sends it."""
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def media(frame: bytes, seq: int) -> bytes:
    return json.dumps({
        "event": "media", "sequenceNumber": str(seq), "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20),
                  "payload": base64.b64encode(frame).decode()},
    }).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--seconds", type=int, default=20, help="simulated call time")
    parser.add_argument("--profile", help="write a cProfile of the run here")
    parser.add_argument("--message-ms", type=int, default=20, help="[playout] message_ms (default 20)")
    args = parser.parse_args()

    sections: dict[str, dict[str, str]] = {
        "platform:twilio": {"path": "/twilio", "backend": "echo", "allow_unauthenticated": "true"},
        "backend:echo": {"type": "echo"},
    }
    if args.message_ms != 20:
        sections["playout"] = {"message_ms": str(args.message_ms)}
    config = parse_config("bench.ini", sections, {})
    clock = Clock()
    metrics = Metrics()
    context = CallContext(clock, PlayoutClock(clock, 20, metrics), metrics, config.playout, False)
    registry = CallRegistry(context, 100000, 0)
    settings = config.platforms[0]
    backend_settings = config.backends[settings.backend]
    backend = backend_settings.type.new_backend(settings.backend, backend_settings.options, clock, metrics)
    endpoint = Endpoint(settings.name, settings.type, settings.options, backend, backend_settings.common)
    factory = PlatformServerFactory(endpoint, registry, config.proxy)
    factory.setProtocolOptions(autoPingInterval=0)

    calls = []
    for i in range(args.calls):
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 10000 + i))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(UPGRADE)
        start = {"event": "start", "streamSid": "MZ1", "start": {
            "streamSid": "MZ1", "accountSid": "AC1", "callSid": f"CA{i}", "tracks": ["inbound"],
            "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
        protocol.dataReceived(client_frame(json.dumps(start).encode()))
        calls.append((protocol, transport))
    # The caller script: 1.2 s of speech, 2.8 s of quiet, repeated; calls offset by one frame each.
    loud = bytes([0x10, 0x90]) * 80
    quiet = b"\xff" * 160
    script = [loud] * 60 + [quiet] * 140
    frames = [client_frame(media(f, n)) for n, f in enumerate(script)]

    ticks = args.seconds * 50
    profile = cProfile.Profile() if args.profile else None
    cpu_in = cpu_out = 0.0
    sent_before = sum(len(t.value()) for _, t in calls)
    if profile:
        profile.enable()
    for tick in range(ticks):
        t0 = time.process_time()
        for i, (protocol, _) in enumerate(calls):
            protocol.dataReceived(frames[(tick + i) % len(frames)])
        t1 = time.process_time()
        clock.advance(0.02)  # the echo's deliveries and the playout's tick
        t2 = time.process_time()
        cpu_in += t1 - t0
        cpu_out += t2 - t1
        if tick % 50 == 0:
            for _, transport in calls:
                transport.clear()
    if profile:
        profile.disable()
        profile.dump_stats(args.profile)
    frames_in = ticks * len(calls)
    out_labels = {"platform": "twilio", "direction": "out"}
    frames_out = metrics.registry.get_sample_value("mediaproxy_frames_total", out_labels) or 0
    seconds = ticks * 0.02
    print(f"calls {len(calls)}, simulated {seconds:.0f} s, inbound frames {frames_in}, "
          f"outbound frames {frames_out:.0f}")
    print(f"inbound: {cpu_in / frames_in * 1e6:.1f} µs CPU per media frame (parse, bridge, echo analysis)")
    if frames_out:
        print(f"outbound + echo bursts: {cpu_out / frames_out * 1e6:.1f} µs CPU per frame sent "
              "(pacing, encode, framing)")
    print(f"core share at {len(calls)} calls: {(cpu_in + cpu_out) / seconds * 100:.0f} % "
          f"(inbound {cpu_in / seconds * 100:.0f} %, outbound {cpu_out / seconds * 100:.0f} %) "
          "— excludes the kernel's socket work")
    del sent_before


if __name__ == "__main__":
    main()
