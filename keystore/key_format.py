"""The API key format `kt_<env>_<random>_<checksum>`: generation, parsing and the typo checksum.

The random part is 32 base62 characters (about 190 bits, so still more than 160 bits after the
four-character display hint). The checksum is CRC32 of `kt_<env>_<random>`, written as six base62
characters: it rejects any single mistyped character before the key store is asked.
"""

import re
import secrets
import zlib
from dataclasses import dataclass

BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_PREFIX = "kt"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
HINT_LENGTH = 4
ENV_PATTERN = re.compile(r"^[a-z0-9]{1,10}$")

_KEY_SHAPE = re.compile(
    rf"^{KEY_PREFIX}_([a-z0-9]{{1,10}})_([0-9A-Za-z]{{{RANDOM_LENGTH}}})_([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)


def encode_base62(value: int, width: int) -> str:
    """`value` in base62, left-padded with zeros to exactly `width` characters."""
    if value < 0 or value >= 62**width:
        raise ValueError(f"{value} does not fit in {width} base62 characters")
    digits = []
    for _ in range(width):
        value, remainder = divmod(value, 62)
        digits.append(BASE62_ALPHABET[remainder])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    """The six-character base62 CRC32 of `kt_<env>_<random>`."""
    return encode_base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A presented key split into its parts; only produced when the checksum holds."""

    env: str
    random: str
    checksum: str

    @property
    def display_prefix(self) -> str:
        """The recognisable, non-secret start of the key: `kt_<env>_`."""
        return f"{KEY_PREFIX}_{self.env}_"

    @property
    def hint(self) -> str:
        """The last four characters, shown after the mask: `kt_live_…9f3a`."""
        return self.checksum[-HINT_LENGTH:]


def generate_key(env: str) -> str:
    """A new secret key for `env` (e.g. `live`, `test`): `kt_<env>_<32 base62>_<6 base62>`."""
    if not ENV_PATTERN.match(env):
        raise ValueError("env must be 1 to 10 lowercase letters or digits, e.g. 'live' or 'test'")
    random_part = "".join(secrets.choice(BASE62_ALPHABET) for _ in range(RANDOM_LENGTH))
    body = f"{KEY_PREFIX}_{env}_{random_part}"
    return f"{body}_{checksum(body)}"


def parse_key(presented: str) -> ParsedKey | None:
    """Split a presented key, or None when its shape or checksum is wrong (a typo, not a key)."""
    match = _KEY_SHAPE.match(presented)
    if match is None:
        return None
    env, random_part, presented_checksum = match.groups()
    if checksum(f"{KEY_PREFIX}_{env}_{random_part}") != presented_checksum:
        return None
    return ParsedKey(env=env, random=random_part, checksum=presented_checksum)


def checksum_holds(presented: str) -> bool:
    """True when `presented` has the key shape and a matching checksum (the fast path of `verify`)."""
    match = _KEY_SHAPE.match(presented)
    return match is not None and checksum(presented[: match.end(2)]) == match.group(3)


def mask(display_prefix: str, hint: str) -> str:
    """How a stored key is shown: `kt_live_…9f3a`."""
    return f"{display_prefix}…{hint}"
