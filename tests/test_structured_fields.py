"""Tests for the RFC 8941 dictionary parser used by the AudioHook signature verifier."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from mediaproxy.platforms.structured_fields import (
    InnerList,
    Item,
    Member,
    StructuredFieldError,
    Token,
    parse_dictionary,
)


def item(member: Member) -> Item:
    assert isinstance(member.value, Item), member
    return member.value


def inner(member: Member) -> InnerList:
    assert isinstance(member.value, InnerList), member
    return member.value


class RfcExampleTests(SynchronousTestCase):
    """The examples of RFC 8941 §3 that are dictionaries (or become one with a key in front)."""

    def test_dictionary_of_string_and_byte_sequence(self) -> None:
        # §3.2: Example-Dict: en="Applepie", da=:w4ZibGV0w6ZydGUK:
        members = parse_dictionary('en="Applepie", da=:w4ZibGV0w6ZydGUK:')
        self.assertEqual(list(members), ["en", "da"])
        self.assertEqual(item(members["en"]).value, "Applepie")
        self.assertEqual(item(members["da"]).value, "Æbletærte\n".encode())

    def test_dictionary_with_true_members_and_parameters(self) -> None:
        # §3.2: Example-Dict: a=?0, b, c; foo=bar
        members = parse_dictionary("a=?0, b, c; foo=bar")
        self.assertIs(item(members["a"]).value, False)
        self.assertIs(item(members["b"]).value, True)
        self.assertEqual(item(members["b"]).params, ())
        self.assertIs(item(members["c"]).value, True)
        self.assertEqual(item(members["c"]).params, (("foo", Token("bar")),))

    def test_dictionary_of_inner_lists_and_items(self) -> None:
        # §3.2: Example-Dict: a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid
        members = parse_dictionary("a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid")
        self.assertEqual([i.value for i in inner(members["a"]).items], [1, 2])
        self.assertEqual(item(members["b"]).value, 3)
        self.assertEqual(item(members["c"]).params, (("aa", Token("bb")),))
        self.assertEqual([i.value for i in inner(members["d"]).items], [5, 6])
        self.assertEqual(inner(members["d"]).params, (("valid", True),))

    def test_inner_lists_with_parameters(self) -> None:
        # §3.1.1 (a list there): ("foo"; a=1;b=2);lvl=5, ("bar" "baz");lvl=1
        members = parse_dictionary('x=("foo"; a=1;b=2);lvl=5, y=("bar" "baz");lvl=1')
        x = inner(members["x"])
        self.assertEqual(x.items, (Item("foo", (("a", 1), ("b", 2))),))
        self.assertEqual(x.params, (("lvl", 5),))
        self.assertEqual(inner(members["y"]).items, (Item("bar", ()), Item("baz", ())))

    def test_empty_inner_list(self) -> None:
        # §3.1.1: ("foo" "bar"), ("baz"), ("bat" "one"), ()
        members = parse_dictionary('a=("foo" "bar"), b=("baz"), c=("bat" "one"), d=()')
        self.assertEqual(inner(members["d"]), InnerList((), ()))
        self.assertEqual(len(inner(members["c"]).items), 2)

    def test_parameters_on_items_in_inner_lists(self) -> None:
        # §3.1.2 (a list there): abc;a=1;b=2; cde_456, (ghi;jk=4 l);q="9";r=w
        members = parse_dictionary('p=abc;a=1;b=2; cde_456, q=(ghi;jk=4 l);q="9";r=w')
        self.assertEqual(item(members["p"]), Item(Token("abc"), (("a", 1), ("b", 2), ("cde_456", True))))
        q = inner(members["q"])
        self.assertEqual(q.items, (Item(Token("ghi"), (("jk", 4),)), Item(Token("l"), ())))
        self.assertEqual(q.params, (("q", "9"), ("r", Token("w"))))

    def test_bare_items(self) -> None:
        # §3.3.1 42, §3.3.3 "hello world", §3.3.4 foo123/456, §3.3.5 the byte sequence, §3.3.6 ?1
        members = parse_dictionary('i=42, s="hello world", t=foo123/456, '
                                   'b=:cHJldGVuZCB0aGlzIGlzIGJpbmFyeSBjb250ZW50Lg==:, f=?1')
        self.assertEqual(item(members["i"]).value, 42)
        self.assertEqual(item(members["s"]).value, "hello world")
        self.assertEqual(item(members["t"]).value, Token("foo123/456"))
        self.assertEqual(item(members["b"]).value, b"pretend this is binary content.")
        self.assertIs(item(members["f"]).value, True)

    def test_decimal_is_refused(self) -> None:
        # §3.2: Example-Dict: rating=1.5, feelings=(joy sadness) -- decimals are not supported here.
        self.assertRaises(StructuredFieldError, parse_dictionary, "rating=1.5, feelings=(joy sadness)")
        members = parse_dictionary("feelings=(joy sadness)")
        self.assertEqual(inner(members["feelings"]).items, (Item(Token("joy"), ()), Item(Token("sadness"), ())))


class ValidInputTests(SynchronousTestCase):
    def test_empty_field_is_empty_dictionary(self) -> None:
        self.assertEqual(parse_dictionary(""), {})
        self.assertEqual(parse_dictionary("   "), {})

    def test_raw_member_text_is_kept(self) -> None:
        members = parse_dictionary('a=("x" "y");k="v", b=:AAE=:, c')
        self.assertEqual(members["a"].raw, '("x" "y");k="v"')
        self.assertEqual(members["b"].raw, ":AAE=:")
        self.assertEqual(members["c"].raw, "")

    def test_signature_input(self) -> None:
        text = ('sig1=("@request-target" "@authority");keyid="a2V5";nonce="bm9uY2U=";'
                'alg="hmac-sha256";created=1641013200;expires=3282026430')
        member = parse_dictionary(text)["sig1"]
        self.assertEqual(member.raw, text[len("sig1="):])
        value = inner(member)
        self.assertEqual([i.value for i in value.items], ["@request-target", "@authority"])
        self.assertEqual(dict(value.params)["created"], 1641013200)
        self.assertEqual(dict(value.params)["alg"], "hmac-sha256")

    def test_string_and_token_differ(self) -> None:
        members = parse_dictionary('a="x", b=x')
        self.assertEqual(item(members["a"]).value, "x")
        self.assertEqual(item(members["b"]).value, Token("x"))

    def test_string_escapes(self) -> None:
        self.assertEqual(item(parse_dictionary(r'a="q\"b\\s"')["a"]).value, 'q"b\\s')

    def test_integers(self) -> None:
        members = parse_dictionary("a=-999999999999999, b=999999999999999, c=0, d=-0")
        self.assertEqual([item(m).value for m in members.values()], [-999999999999999, 999999999999999, 0, 0])

    def test_byte_sequences(self) -> None:
        members = parse_dictionary("e=::, p=:AAE:, q=:AAE=:")
        self.assertEqual(item(members["e"]).value, b"")
        self.assertEqual(item(members["p"]).value, b"\x00\x01")  # unpadded accepted (§4.2.7)
        self.assertEqual(item(members["q"]).value, b"\x00\x01")

    def test_whitespace(self) -> None:
        members = parse_dictionary(" \ta=1 ,\tb=( 1  2 );x ,c;  y=2 \t")
        self.assertEqual(item(members["a"]).value, 1)
        self.assertEqual([i.value for i in inner(members["b"]).items], [1, 2])
        self.assertEqual(inner(members["b"]).params, (("x", True),))
        self.assertEqual(item(members["c"]).params, (("y", 2),))

    def test_repeated_key_last_value_wins_in_first_position(self) -> None:
        members = parse_dictionary("a=1, b=2, a=3")
        self.assertEqual(list(members), ["a", "b"])
        self.assertEqual(item(members["a"]).value, 3)

    def test_repeated_parameters_are_kept(self) -> None:
        self.assertEqual(item(parse_dictionary("a=1;k=1;k=2")["a"]).params, (("k", 1), ("k", 2)))

    def test_key_characters(self) -> None:
        self.assertEqual(list(parse_dictionary("*a_b-c.d*9=1")), ["*a_b-c.d*9"])

    def test_token_characters(self) -> None:
        token = "*Ab0!#$%&'*+-.^_`|~:/"
        self.assertEqual(item(parse_dictionary(f"a={token}")["a"]).value, Token(token))


MALFORMED = [
    ",", "a=1,", "a=1, ", "a=1,,b=2", "a=1 b=2", "a=1;", "a=1; ", "a=1;=2", "a=;", "a=", "=1",
    "A=1", "1a=1", "a b", "a=1\n", "a=1,\nb=2", "a=1 ;x", "a=(1) ;x",
    # inner lists
    "a=(", "a=(1", "a=(1 ", "a=(1,2)", "a=(1)2", "a=((1))", "a=(1);", "a=(\t1)",
    # integers and decimals
    "a=-", "a=--1", "a=1.5", "a=1.", "a=-1.0", "a=1234567890123456", "a=-1234567890123456",
    # strings
    'a="', 'a="abc', 'a="a\\', 'a="\\n"', 'a="\\', 'a="é"', 'a="\t"', 'a="\x7f"',
    # tokens and other first characters
    "a=é", "a=#", "a=/x", "a=%", "a=٣",
    # byte sequences
    "a=:", "a=:AAE=", "a=:A:", "a=:AA=A:", "a=:A A:", "a=:AAE==:x", "a=:é:", "a=:-_8=:", "a=:AA===:",
    # booleans
    "a=?", "a=?2", "a=?true", "a=?01x",
]


class MalformedInputTests(SynchronousTestCase):
    def test_malformed_inputs_raise_the_module_error(self) -> None:
        for text in MALFORMED:
            with self.subTest(text=text):
                self.assertRaises(StructuredFieldError, parse_dictionary, text)

    def test_error_is_a_value_error(self) -> None:
        self.assertTrue(issubclass(StructuredFieldError, ValueError))

    def test_random_inputs_raise_nothing_else(self) -> None:
        """Mutations of a valid signature field either parse or raise StructuredFieldError."""
        rng = random.Random(8941)
        seed = ('sig1=("@request-target" "x-api-key");keyid="k";nonce="bm9uY2U=";created=1;a=?1;t=tok, '
                "sig2=:AAE=:;x=-5")
        alphabet = seed + '()";:=,?-. \t\\é\x00\x7f0123456789'
        for _ in range(5000):
            chars = list(seed)
            for _ in range(rng.randint(1, 4)):
                operation = rng.randrange(3)
                where = rng.randrange(len(chars) + 1)
                if operation == 0 and chars:
                    del chars[min(where, len(chars) - 1)]
                elif operation == 1:
                    chars.insert(where, rng.choice(alphabet))
                else:
                    chars = chars[:where]
            text = "".join(chars)
            try:
                parse_dictionary(text)
            except StructuredFieldError:
                pass
            except Exception as e:  # pragma: no cover - the failure path
                self.fail(f"{type(e).__name__} leaked for {text!r}: {e}")
