"""Plain words for Arrow types ("text", "integer (32-bit)", "list of float"), so that no
user-facing message shows Arrow's own names such as ``large_string``."""

from __future__ import annotations

import re
from typing import Any

# Arrow's type names as people say them (``large_string`` is text)
_TYPE_WORDS = {
    "string": "text",
    "large_string": "text",
    "string_view": "text",
    "utf8": "text",
    "large_utf8": "text",
    "binary": "bytes",
    "large_binary": "bytes",
    "binary_view": "bytes",
    "bool": "boolean",
    "int64": "integer",
    "double": "float",
    "float64": "float",
    "null": "null",
}


_SIZED = re.compile(r"^(u?)int(8|16|32)$|^(float|halffloat)(16|32)?$")


def type_name(arrow_type: Any) -> str:
    """A plain word for an Arrow type (or its text form): text, integer, float, boolean,
    bytes, a sized variant such as ``integer (32-bit)``, ``list of text``..."""
    import pyarrow as pa

    if isinstance(arrow_type, pa.DataType):
        if pa.types.is_dictionary(arrow_type):
            return type_name(arrow_type.value_type)
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            return f"list of {type_name(arrow_type.value_type)}"
        if pa.types.is_fixed_size_list(arrow_type):
            return f"list of {arrow_type.list_size} {type_name(arrow_type.value_type)}"
        if pa.types.is_timestamp(arrow_type):
            return "timestamp" + (f" ({arrow_type.tz})" if arrow_type.tz else "")
        if pa.types.is_decimal(arrow_type):
            return "decimal"
    text = str(arrow_type)
    if text in _TYPE_WORDS:
        return _TYPE_WORDS[text]
    sized = _SIZED.match(text)
    if sized:
        unsigned, bits, _kind, fbits = sized.groups()
        if bits:
            return f"{'unsigned ' if unsigned else ''}integer ({bits}-bit)"
        return f"float ({fbits or 16}-bit)"
    if text == "uint64":
        return "unsigned integer"
    for prefix in ("date", "time", "duration"):
        if text.startswith(prefix):
            return prefix
    return text
