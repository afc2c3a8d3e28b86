"""``mediaproxy.strict_json``: what every peer's JSON is parsed with."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy import strict_json


class StrictJsonTests(SynchronousTestCase):
    def test_standard_json_parses_as_json_loads_does(self) -> None:
        text = '{"a": [1, -2.5, 1e3, true, null, "\\u00e9"], "b": {"c": 0.0}}'
        self.assertEqual(strict_json.loads(text), {"a": [1, -2.5, 1000.0, True, None, "é"], "b": {"c": 0.0}})
        self.assertEqual(strict_json.loads(text.encode()), strict_json.loads(text))

    def test_non_standard_constants_and_infinite_floats_are_refused(self) -> None:
        for literal in ("NaN", "Infinity", "-Infinity", "1e999", "-1e400"):
            with self.assertRaises(ValueError, msg=literal):
                strict_json.loads(f'{{"x": {literal}}}')

    def test_bytes_must_be_utf8(self) -> None:
        with self.assertRaises(ValueError):  # UnicodeDecodeError is a ValueError
            strict_json.loads(b'{"x": "\xff"}')

    def test_deep_nesting_raises_recursion_error_as_json_loads_does(self) -> None:
        with self.assertRaises(RecursionError):
            strict_json.loads("[" * 100000)
