"""Cheap hostile input for the fuzz suites: one hypothesis draw per example, many messages from it.

Each example is a *program*: a short byte string drawn by hypothesis (``PROGRAMS``). Every four
bytes are one step: an opcode byte, which the suite maps to an action (a valid message built from
a real template, a targeted malformation with a known verdict, a random mutation of a template, a
command, a binary frame), and a 24-bit seed from which that step's details come. Drawing one
``bytes`` value keeps hypothesis's own cost per example small, so ten thousand examples of a dozen
messages each run in seconds, and shrinking still works step by step: deleting four bytes drops
one step, lowering an opcode byte picks an earlier action, and the other steps stay as they were.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any
from unittest import TestCase

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = 10_000
"""Generated cases per platform and per run."""

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Deterministic (the same cases on every run and in CI), no example database, no deadline."""

PROGRAMS = st.binary(min_size=4, max_size=72)
"""Up to 18 steps per example."""


def run_programs(case: TestCase, run_program: Callable[[bytes], object], *, cases_of: str = "program") -> None:
    """Feed ``run_program`` the generated programs (:data:`PROGRAMS` under :data:`FUZZ`) and
    assert on ``case`` that it really ran :data:`FUZZ_EXAMPLES` of them.

    The programs are the ones each suite always ran: before this helper every suite had its own
    inline ``run`` calling ``self.run_program(<cases_of>)``, and ``derandomize`` seeded it from
    that function's source (:func:`_inline_seed`); an explicit seed keeps those cases."""
    cases = 0

    @FUZZ
    @seed(_inline_seed(cases_of))
    @given(PROGRAMS)
    def run(program: bytes) -> None:
        nonlocal cases
        cases += 1
        run_program(program)

    run()
    case.assertGreaterEqual(cases, FUZZ_EXAMPLES)


def _inline_seed(call: str) -> int:
    """The seed hypothesis's ``derandomize`` derived from a suite's former inline test function
    (its source, decorators included as it is nested, then its signature, hashed with SHA-384)."""
    source = ("        @FUZZ\n        @given(PROGRAMS)\n        def run(program: bytes) -> None:\n"
              f"            counted.cases += 1\n            self.run_program({call})")
    signature = "<Signature (program: 'bytes') -> 'None'>"
    return int.from_bytes(hashlib.sha384((source + signature).encode()).digest(), "big")


def steps(program: bytes) -> Iterator[tuple[int, random.Random]]:
    """The program's steps: (opcode, a generator seeded from the step's own three bytes)."""
    for i in range(0, len(program) - 3, 4):
        yield program[i], random.Random(int.from_bytes(program[i + 1:i + 4], "big"))


KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
"""A metric label value the code chose: a short identifier, never text from the input."""

DEEP = "\x00deep\x00"
"""A placeholder value that :func:`dump` replaces with deeply nested JSON text."""

HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 7, 2**31, 2**63, -(2**63), 10**40, 0.5, -0.0, 1e308,
    float("inf"), float("-inf"), float("nan"),
    "", " ", "\ud800", "\udfff\ud800", "\x00", "é\u2028", "x" * 300, "PT1S", "PT-1S", "P1D",
    "00000000-0000-0000-0000-000000000000", "not-a-uuid", "AAAA", "!!!!", "AA=A", "====",
    "\u00ff" * 4, "2", "audio", "PCMU", "raw/mulaw",
    [], [None], ["external"], ["external", "external"], [[[]]], {}, {"a": 1}, {"type": "audio"},
    {"id": None}, DEEP,
)
"""Wrong types, huge and non-finite numbers, lone surrogates, near-miss strings, nesting."""

IDENTIFIER_CHARS = "abcdefghijklmnopqrstuvwxyz._"


def identifier(rng: random.Random, prefix: str = "") -> str:
    """A plausible, unknown message type name (the protocol may add such names)."""
    return prefix + "".join(rng.choice(IDENTIFIER_CHARS) for _ in range(rng.randint(1, 12)))


def hostile_value(rng: random.Random) -> Any:
    """One value from :data:`HOSTILE_VALUES`, or an odd string."""
    if rng.random() < 0.15:
        return hostile_string(rng)
    return rng.choice(HOSTILE_VALUES)


def with_hostile_fields(message: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``message`` (changed in place) with most fields but ``type`` replaced by hostile values."""
    for key in list(message):
        if key != "type" and rng.random() < 0.7:
            message[key] = hostile_value(rng)
    return message


def deep_nesting(rng: random.Random) -> str:
    """Text nested deeper than any JSON parser should follow (and left unclosed)."""
    return "[" * rng.choice((1000, 30000)) + "]" * 10


def hostile_string(rng: random.Random) -> str:
    """A string of awkward characters: controls, quotes, surrogates, non-BMP, RTL marks."""
    alphabet = "a0\"\\\x00\x7f\u00e9\u200f\ud800\udc00\U0001f600 {}[]:,="
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))


def dump(message: Any, rng: random.Random | None = None) -> str:
    """``message`` as JSON text (non-finite floats included, as Python writes them), with any
    :data:`DEEP` placeholder replaced by nesting deep enough to trouble a recursive parser."""
    text = json.dumps(message)
    if '"\\u0000deep\\u0000"' in text:
        depth = (rng or random.Random(0)).choice((40, 900, 3000, 20000))
        text = text.replace('"\\u0000deep\\u0000"', "[" * depth + "]" * depth)
    return text


def _containers(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            yield from _containers(item, path + (key,))
    elif isinstance(value, list):
        yield path, value
        for index, item in enumerate(value):
            yield from _containers(item, path + (index,))


def mutate(message: dict[str, Any], rng: random.Random) -> str:
    """A random corruption of a real message, as text: a key dropped, a value (at any depth)
    replaced by a hostile one, an unknown key added, the text cut short or padded, the whole
    thing replaced by another JSON type, or the nesting made deep. The result may still be valid."""
    message = json.loads(json.dumps(message))  # a deep copy of plain data
    op = rng.randrange(10)
    containers = list(_containers(message))
    _, target = rng.choice(containers)
    if op <= 1 and isinstance(target, dict) and target:
        del target[rng.choice(list(target))]
    elif op <= 4:
        if isinstance(target, dict) and target:
            target[rng.choice(list(target))] = hostile_value(rng)
        elif isinstance(target, list) and target:
            target[rng.randrange(len(target))] = hostile_value(rng)
        else:
            message[rng.choice(list(message) or ["x"])] = hostile_value(rng)
    elif op == 5:
        if isinstance(target, dict):
            target[identifier(rng)] = hostile_value(rng)
        else:
            target.append(hostile_value(rng))
    elif op == 6:
        text = dump(message, rng)
        return text[: rng.randrange(len(text))]
    elif op == 7:
        return dump(rng.choice(([message], "message", 12, None, [], True)), rng)
    elif op == 8:
        text = dump(message, rng)
        cut = rng.randrange(len(text) + 1)
        return text[:cut] + rng.choice((",", "}", "]", '"', "\\", "\x00", " ", "\ud800", "NaN", "{" * 30)) + text[cut:]
    else:
        return "[" * rng.choice((10, 1000, 30000)) + dump(message, rng)
    return dump(message, rng)


def garbage_text(rng: random.Random) -> str:
    """Text that is not JSON at all."""
    return rng.choice(("", " ", "{", "}", "{not json", "[1,", "nul", "\"open", "'{}'", "\ufeff{}", "{\"a\":}",
                       "{}{}", "\x00", "NaN-")) + hostile_string(rng)


def binary_frame(rng: random.Random) -> bytes:
    """A binary frame of an awkward size: empty, one byte, odd, a sample frame, large."""
    size = rng.choice((0, 1, 2, 3, 159, 160, 161, 320, 1600, 3201, 70000))
    return rng.randbytes(size)


def strict_json(text: object) -> Any:
    """Parse what a session queued as a text frame: a ``str`` that is valid UTF-8 when encoded,
    and strict JSON (no NaN or Infinity). Raises ``AssertionError`` otherwise."""
    assert isinstance(text, str), f"a text frame must be str, not {type(text).__name__}"
    text.encode("utf-8")  # a lone surrogate cannot go out in a text frame

    def no_constants(name: str) -> Any:
        raise AssertionError(f"{name} is not JSON")

    value = json.loads(text, parse_constant=no_constants)
    assert isinstance(value, dict), text[:80]
    return value
