"""Object ids: the BLAKE3-256 of an object's canonical bytes (for a file, of its raw content).

``ObjectId`` holds the 32 raw bytes; ``.hex`` is the 64-character form people and files see,
``.short`` the display form (``short(hex)`` for an id already written as hex).
``ObjectId.parse`` is the one way in from text.
"""

from __future__ import annotations

import re

import blake3

HASH_ALGORITHM = "blake3"
DIGEST_SIZE = 32
SHORT_LEN = 10
_HEX = re.compile(r"^[0-9a-f]{64}$")


class ObjectId(bytes):
    """32 raw digest bytes. Compares and hashes as bytes; prints as hex."""

    __slots__ = ()

    def __new__(cls, raw: bytes):
        if len(raw) != DIGEST_SIZE:
            raise ValueError(f"an object id has {DIGEST_SIZE} bytes, not {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def parse(cls, text: str) -> ObjectId:
        if not _HEX.match(text):
            raise ValueError(f"not a full object id (64 lowercase hex digits): {text!r}")
        return cls(bytes.fromhex(text))

    @classmethod
    def of(cls, data: bytes | memoryview) -> ObjectId:
        return cls(blake3.blake3(data).digest())

    @property
    def hex(self) -> str:  # type: ignore[override]
        return bytes.hex(self)

    @property
    def short(self) -> str:
        return bytes.hex(self)[:SHORT_LEN]

    def __str__(self) -> str:
        return bytes.hex(self)

    def __repr__(self) -> str:
        return f"ObjectId({self.short})"


def short(hex_id: str) -> str:
    """The display form of an id written as hex (in a dict, a JSON document, the index)."""
    return hex_id[:SHORT_LEN]


def is_hex_prefix(text: str) -> bool:
    return 4 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


class RunId(str):
    """A run id as the public API returns it (``Repo.commit``, ``Repo.tag``): the 64 hex
    digits themselves, so it prints, slices, compares with text and goes into JSON; ``.oid``
    is the ``ObjectId`` the library works with.

    It also compares equal to that ``ObjectId`` (``repo.head() == run_id``), but hashes as
    text: key sets and dicts of ids by ``.oid``.
    """

    __slots__ = ()
    __hash__ = str.__hash__

    def __eq__(self, other):
        if isinstance(other, ObjectId):
            return bytes.hex(other) == str.__str__(self)
        return str.__eq__(self, other)

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __new__(cls, value: ObjectId | str):
        oid = value if isinstance(value, ObjectId) else ObjectId.parse(str(value))
        return super().__new__(cls, oid.hex)

    @property
    def oid(self) -> ObjectId:
        return ObjectId(bytes.fromhex(self))

    @property
    def hex(self) -> str:
        return str.__str__(self)

    @property
    def short(self) -> str:
        return str.__str__(self)[:SHORT_LEN]

    def __repr__(self) -> str:
        return f"RunId({str.__repr__(self)})"
