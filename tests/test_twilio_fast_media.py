"""The Twilio media fast path (no general JSON decode) answers exactly what the general path does,
for valid, hostile and corrupted messages, compact or not."""

from __future__ import annotations

import base64
import json
import random
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.platforms.base import CallEnded, CallerAudio
from mediaproxy.platforms.twilio import TwilioSession
from tests.strategies import mutate
from tests.test_fuzz_platforms import twilio_start, twilio_targeted, twilio_valid

NOISE = ['"', "\\", "\x00", "\x1f", "}", "{", ",", ":", "=", "é", " ", "A", "\ud800", '"event":"x",', '"media":1,']


class GeneralOnly(TwilioSession):
    fast_media = re.compile(r"(?!)")  # never matches: every message takes the general path


def compact(message: Any) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def twilio_wire_media(rng: random.Random) -> str:
    """A media message as Twilio and the simulator write it (two key orders)."""
    data = rng.randbytes(rng.choice((0, 1, 160, 480, 1600, 1601)))
    payload = base64.b64encode(data).decode("ascii")
    media = {"track": rng.choice(("inbound", "inbound_track", "outbound", "")), "chunk": str(rng.randrange(9)),
             "timestamp": str(rng.randrange(999)), "payload": payload}
    if rng.random() < 0.5:
        message = {"event": "media", "sequenceNumber": "4", "media": media, "streamSid": "MZ1"}
    else:
        message = {"event": "media", "sequenceNumber": "4", "streamSid": "MZ1", "media": media}
    return compact(message)


def corrupt(text: str, rng: random.Random) -> str:
    """``text`` with a few characters replaced, inserted or deleted."""
    chars = list(text)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        if op == 0 and i < len(chars):
            chars[i] = rng.choice(NOISE)
        elif op == 1:
            chars.insert(i, rng.choice(NOISE))
        elif i < len(chars):
            del chars[i]
    return "".join(chars)


class FastPathEquivalenceTests(SynchronousTestCase):
    def test_same_events_as_the_general_path(self) -> None:
        rng = random.Random(20261201)
        fast_hits = 0
        for _ in range(300):
            fast, general = TwilioSession(max_frame_bytes=1600), GeneralOnly(max_frame_bytes=1600)
            start = compact(twilio_start(rng))
            texts = [start]
            for _ in range(rng.randrange(1, 30)):
                op = rng.randrange(6)
                if op <= 1:
                    texts.append(twilio_wire_media(rng))
                elif op == 2:
                    texts.append(corrupt(twilio_wire_media(rng), rng))
                elif op == 3:
                    texts.append(mutate(json.loads(twilio_wire_media(rng)), rng))
                elif op == 4:
                    texts.append(twilio_targeted(rng, True)[0])
                else:
                    texts.append(compact(twilio_valid(rng)))
            for text in texts:
                if fast.started and not fast.finished and fast.fast_media.fullmatch(text):
                    fast_hits += 1
                self.assertEqual(fast.receive_text(text), general.receive_text(text), text[:200])
                self.assertEqual(fast.take_output(), general.take_output())
                self.assertEqual((fast.started, fast.finished), (general.started, general.finished))
        self.assertGreater(fast_hits, 1000)  # the fast path was exercised, not bypassed

    def test_the_usual_frame_is_caller_audio(self) -> None:
        session = TwilioSession()
        session.receive_text(compact(twilio_start(random.Random(1))))
        text = ('{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1","timestamp":"5",'
                '"payload":"//8A"},"streamSid":"MZ1"}')
        self.assertIsNotNone(session.fast_media.fullmatch(text))
        self.assertEqual(session.receive_text(text), [CallerAudio(b"\xff\xff\x00")])

    def test_a_repeated_event_key_takes_the_general_path(self) -> None:
        session, general = TwilioSession(), GeneralOnly()
        for s in (session, general):
            s.receive_text(compact(twilio_start(random.Random(1))))
        text = ('{"event":"media","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"//8A"},'
                '"event":"stop"}')
        events = session.receive_text(text)
        self.assertEqual(events, general.receive_text(text))
        self.assertEqual(events, [CallEnded("stop")])  # json.loads keeps the last "event"
