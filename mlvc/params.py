"""Typed params and metrics from the command line and from files.

``KEY=VALUE`` values are typed in this order: ``true``/``false`` → bool, an integer → int,
a decimal or exponent number (``nan``/``inf`` included) → float, anything else → str. Quote
the value (``name='"1"'``) to force a string. Nested keys from files are flattened with dots.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .errors import UsageError

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+|\d+\.\d*[eE][+-]?\d+)$")
_SPECIAL = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_KEY = re.compile(r"^[A-Za-z_][\w.\-/]*$")


def typed_value(text: str) -> bool | int | float | str:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if low in _SPECIAL:
        return _SPECIAL[low]
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def check_key(key: str, token: str) -> str:
    if not _KEY.match(key):
        raise UsageError(
            f"bad key in {token!r}: keys start with a letter or _ and hold letters, digits, . _ - /"
        )
    return key


def parse_assignment(token: str, what: str = "param") -> tuple[str, Any]:
    """Split ``KEY=VALUE`` and type the value; errors name the offending token."""
    key, sep, value = token.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"bad {what} {token!r}: expected KEY=VALUE, e.g. lr=0.01")
    return check_key(key.strip(), token), typed_value(value)


def parse_params(tokens) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tok in tokens:
        k, v = parse_assignment(tok, "param")
        out[k] = v
    return out


def parse_metrics(tokens) -> dict[str, float]:
    out: dict[str, float] = {}
    for tok in tokens:
        k, v = parse_assignment(tok, "metric")
        out[k] = metric_value(k, v, tok)
    return out


def metric_value(key: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"metric {key!r} in {where!r} is {value!r}, not a number")
    return float(value)


def parse_tags(tokens) -> dict[str, str]:
    """``TAG`` or ``TAG=VALUE`` tokens; a bare tag has the value ``""`` (a label)."""
    out = {}
    for tok in tokens:
        k, sep, val = tok.partition("=")
        out[k.strip()] = val if sep else ""
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested maps to dotted keys; lists and nulls become JSON text (params are scalars)."""
    if not isinstance(value, dict):
        return {prefix: _scalar(value)}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, list | tuple):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, bool | int | float | str):
        return v
    return str(v)  # dates from YAML/TOML


def load_structured(path: str | Path) -> Any:
    """Read a JSON, YAML or TOML file by its suffix; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror}") from None
    suffix = p.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UsageError(
                    f"{p} is YAML but PyYAML is not installed; `pip install pyyaml`"
                ) from None
            return yaml.safe_load(text)
        if suffix == ".toml":
            return _toml().loads(text)
        return json.loads(text)
    except UsageError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot parse {p}: {first}") from None


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def load_params_file(path: str | Path) -> dict[str, Any]:
    data = load_structured(path)
    if not isinstance(data, dict):
        raise UsageError(f"params file {path} must hold a map of names to values")
    return flatten(data)


def load_metrics_file(path: str | Path) -> dict[str, float]:
    data = load_structured(path)
    if not isinstance(data, dict):
        raise UsageError(f"metrics file {path} must hold a map of names to numbers")
    return {k: metric_value(k, v, str(path)) for k, v in flatten(data).items()}
