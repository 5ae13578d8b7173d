"""Properties of the key format `kt_<env>_<random>_<checksum>`."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from keytrail.keystore.key_format import (
    BASE62_ALPHABET,
    CHECKSUM_LENGTH,
    HINT_LENGTH,
    RANDOM_LENGTH,
    checksum_holds,
    encode_base62,
    generate_key,
    parse_key,
)
from keytrail.schemas.usage import SECRET_SHAPE

envs = st.from_regex(r"\A[a-z0-9]{1,10}\Z")
# every printable ASCII character, so a change can also hit the separators and the prefix
replacement_characters = st.characters(min_codepoint=33, max_codepoint=126)


@given(env=envs)
def test_every_generated_key_parses_and_its_checksum_holds(env):
    key = generate_key(env)
    parsed = parse_key(key)
    assert parsed is not None
    assert checksum_holds(key)
    assert parsed.env == env
    assert key == f"kt_{env}_{parsed.random}_{parsed.checksum}"
    assert parsed.hint == key[-HINT_LENGTH:]


@given(env=envs)
def test_generated_keys_match_the_shape_secret_scanners_and_the_event_contract_know(env):
    assert SECRET_SHAPE.match(generate_key(env))


@settings(max_examples=500)
@given(env=envs, data=st.data())
def test_any_single_character_change_fails_the_checksum(env, data):
    key = generate_key(env)
    position = data.draw(st.integers(min_value=0, max_value=len(key) - 1))
    replacement = data.draw(replacement_characters.filter(lambda character: character != key[position]))
    typo = key[:position] + replacement + key[position + 1 :]
    assert parse_key(typo) is None
    assert not checksum_holds(typo)


@given(env=envs, data=st.data())
def test_a_dropped_character_in_the_random_part_or_checksum_is_rejected(env, data):
    key = generate_key(env)
    start = len(f"kt_{env}_")
    position = data.draw(st.integers(min_value=start, max_value=len(key) - 1))
    shortened = key[:position] + key[position + 1 :]
    assert parse_key(shortened) is None
    assert not checksum_holds(shortened)


def test_the_random_part_holds_at_least_160_bits_beyond_the_displayed_hint():
    assert RANDOM_LENGTH * math.log2(62) - HINT_LENGTH * math.log2(62) >= 160


def test_two_generated_keys_differ():
    assert len({generate_key("live") for _ in range(1000)}) == 1000


@given(value=st.integers(min_value=0, max_value=62**CHECKSUM_LENGTH - 1))
def test_base62_encoding_is_fixed_width_and_reversible(value):
    encoded = encode_base62(value, CHECKSUM_LENGTH)
    assert len(encoded) == CHECKSUM_LENGTH
    decoded = 0
    for character in encoded:
        decoded = decoded * 62 + BASE62_ALPHABET.index(character)
    assert decoded == value


def test_strings_that_are_not_keys_do_not_parse():
    for text in ["", "kt_live__abc", "Bearer kt_live_x", "kt_LIVE_" + "a" * 32 + "_abcdef", "x" * 1000]:
        assert parse_key(text) is None
