"""Typed params and metrics from the command line and from files.

``KEY=VALUE`` values are typed in this order: ``true``/``false`` → bool, an integer → int,
a decimal or exponent number (``nan``/``inf`` included) → float, anything else → str. Quote
the value (``name='"1"'``) to force a string. Nested keys from files are flattened with dots.

What a run can store, checked wherever params and metrics enter (``-p``/``-M``, params and
metrics files, live runs, ``mlvc run -P``), so a bad value is refused with one line instead
of failing (or being lost) when the run is written:

- keys: a letter or ``_`` first, then letters, digits, ``. _ - /``; at most 250 characters;
  two keys of one run may not differ only in case (SQL and ``runs_wide`` cannot tell them
  apart);
- int params: 64-bit, ``-2**63`` to ``2**63 - 1`` (what the index and every reader hold; log
  a bigger number, such as a 128-bit seed, as a string);
- str params: at most 64 KiB of UTF-8 (params are settings; keep big values in files);
- metrics: numbers that fit a 64-bit float (``nan`` and ``inf`` are kept when asked for).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+|\d+\.\d*[eE][+-]?\d+)$")
_SPECIAL = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_KEY = re.compile(r"[A-Za-z_][\w.\-/]*")  # fullmatch: "$" would let a final newline in
MAX_KEY_CHARS = 250
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_PARAM_BYTES = 64 * 1024


def typed_value(text: str) -> bool | int | float | str:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if _INT.match(text):
        try:
            return int(text)
        except ValueError:  # over Python's 4,300-digit limit: far beyond any stored number
            return float(text)
    if _FLOAT.match(text):
        return float(text)
    if low in _SPECIAL:
        return _SPECIAL[low]
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def check_key(key: str, token: str | None = None, where: str = "") -> str:
    """``key`` if a run can store it, else a one-line UsageError naming it (and ``token``,
    the text it came from, or ``where``, e.g. " in params file p.yaml")."""
    if isinstance(key, str) and len(key) <= MAX_KEY_CHARS and _KEY.fullmatch(key):
        return key
    shown = _short(key if isinstance(key, str) else str(key))
    place = f" in {_short(token)!r}" if token is not None and token != key else ""
    raise UsageError(
        f"bad key {shown!r}{place}{where}: keys start with a letter or _ and hold letters, "
        f"digits, . _ - / (at most {MAX_KEY_CHARS} characters)"
    )


def check_param(key: str, value: Any, where: str = "") -> Any:
    """``value`` if a run can store it as param ``key``, else a one-line UsageError."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise UsageError(
                f"param {key!r}{where} is {_short(_text(value))}, outside the 64-bit "
                f"integer range ({INT_MIN} to {INT_MAX}) a run stores; store it as a string "
                "(quoted, on the command line)"
            )
        return value
    if isinstance(value, str):
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise UsageError(
                f"param {key!r}{where} holds text that is not valid Unicode (a lone surrogate)"
            ) from None
        if size > MAX_PARAM_BYTES:
            raise UsageError(
                f"param {key!r}{where} is {size} bytes; a param holds at most {MAX_PARAM_BYTES} "
                "bytes (64 KiB): keep big values in a file and record it as data or an artifact"
            )
        return value
    raise UsageError(
        f"param {key!r}{where} is a {type(value).__name__}; params are int, float, bool or str"
    )


def check_params(params: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Every key and value checked (see the module docstring); the same map as a dict."""
    for k, v in params.items():
        check_param(check_key(k, where=where), v, where)
    check_case(params, "param", where)
    return dict(params)


def check_metrics(metrics: Mapping[str, Any], where: str = "") -> dict[str, float]:
    out = {check_key(k, where=where): metric_value(k, v, where) for k, v in metrics.items()}
    check_case(out, "metric", where)
    return out


def check_case(keys: Iterable[str], what: str, where: str = "") -> None:
    """Refuse two keys that differ only in case: one column of runs_wide would hide one."""
    seen: dict[str, str] = {}
    for k in keys:
        other = seen.setdefault(k.lower(), k)
        if other != k:
            raise UsageError(
                f"{what} keys {other!r} and {k!r}{where} differ only in case, which SQL "
                "cannot tell apart; rename one"
            )


def case_twin(key: str, keys: Iterable[str]) -> str | None:
    """A key of ``keys`` that differs from ``key`` only in case, if any."""
    low = key.lower()
    return next((k for k in keys if k != key and k.lower() == low), None)


def parse_assignment(token: str, what: str = "param") -> tuple[str, Any]:
    """Split ``KEY=VALUE`` and type the value; errors name the offending token."""
    key, sep, value = token.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"bad {what} {token!r}: expected KEY=VALUE, e.g. lr=0.01")
    typed = typed_value(value)
    if isinstance(typed, float) and math.isinf(typed) and value.strip().lower() not in _SPECIAL:
        raise UsageError(
            f"{what} {key.strip()!r} in {_short(token)!r} is too large for a 64-bit float; "
            "write inf for infinity"
        )
    return check_key(key.strip(), token), typed


def parse_params(tokens) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tok in tokens:
        k, v = parse_assignment(tok, "param")
        out[k] = check_param(k, v)
    check_case(out, "param")
    return out


def parse_metrics(tokens) -> dict[str, float]:
    out: dict[str, float] = {}
    for tok in tokens:
        k, v = parse_assignment(tok, "metric")
        out[k] = metric_value(k, v)
    check_case(out, "metric")
    return out


def metric_value(key: str, value: Any, where: str = "") -> float:
    """``value`` as a metric (a float), or a one-line UsageError; ``where`` is appended to
    the name, e.g. " in metrics file m.json"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"metric {key!r}{where} is {_short(_text(value))}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise UsageError(
            f"metric {key!r}{where} is {_short(_text(value))}, too large for a 64-bit float"
        ) from None


def _text(value: Any) -> str:
    """repr, safe for any int (Python refuses to print one of over 4,300 digits)."""
    try:
        return repr(value)
    except ValueError:
        return f"an integer of {value.bit_length()} bits"


def _short(text: str, limit: int = 60) -> str:
    """Long values cut for an error line (a 400-digit number names itself by its start)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_tags(tokens) -> dict[str, str]:
    """``TAG`` or ``TAG=VALUE`` tokens; a bare tag has the value ``""`` (a label)."""
    out = {}
    for tok in tokens:
        k, sep, val = tok.partition("=")
        out[k.strip()] = val if sep else ""
    return out


def flatten(value: Any, prefix: str = "", where: str = "") -> dict[str, Any]:
    """Nested maps to dotted keys; lists and nulls become JSON text (params are scalars).

    A dotted key given twice (``a.b`` and ``a: {b: ...}``) is refused, not overwritten."""
    if not isinstance(value, dict):
        return {prefix: _scalar(value)}
    out: dict[str, Any] = {}
    for k, v in value.items():
        for key, item in flatten(v, f"{prefix}.{k}" if prefix else str(k), where).items():
            if key in out:
                raise UsageError(f"key {_short(key)!r}{where} is given twice (nested and dotted)")
            out[key] = item
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
            return _bounded(yaml.safe_load(text), p)
        if suffix == ".toml":
            return _toml().loads(text)
        return json.loads(text)
    except UsageError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot parse {p}: {first}") from None


MAX_VALUES = 100_000  # values a params or metrics file may hold once YAML aliases expand


def _bounded(value: Any, path: Path) -> Any:
    """Refuse a document whose aliases expand to more than MAX_VALUES values.

    PyYAML shares aliased nodes, so loading a "billion laughs" file is cheap, but flattening
    it is not: count the expanded size over the shared graph (memoized, so in time linear in
    the file) before anything walks it.
    """
    sizes: dict[int, int] = {}

    def size(v: Any) -> int:
        if not isinstance(v, dict | list):
            return 1
        known = sizes.get(id(v))
        if known is None:
            sizes[id(v)] = 1  # a cycle (a recursive alias) counts once, then is refused
            children = v.values() if isinstance(v, dict) else v
            known = 1 + sum(size(c) for c in children)
            if known > MAX_VALUES:
                raise UsageError(
                    f"{path} expands to over {MAX_VALUES:,} values through YAML aliases; "
                    "write the values out instead"
                )
            sizes[id(v)] = known
        return known

    try:
        size(value)
    except RecursionError:
        raise UsageError(f"{path} is nested too deeply; flatten it") from None
    if _cyclic(value, set()):
        raise UsageError(f"{path} refers to itself through a YAML alias; write it out instead")
    return value


def _cyclic(v: Any, path: set[int]) -> bool:
    if not isinstance(v, dict | list):
        return False
    if id(v) in path:
        return True
    path.add(id(v))
    try:
        return any(_cyclic(c, path) for c in (v.values() if isinstance(v, dict) else v))
    finally:
        path.discard(id(v))


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def load_params_file(path: str | Path) -> dict[str, Any]:
    """A params file's flattened, checked params; errors name the file and the key."""
    data = load_structured(path)
    if not isinstance(data, dict):
        raise UsageError(f"params file {path} must hold a map of names to values")
    where = f" in params file {path}"
    return check_params(flatten(data, where=where), where)


def load_metrics_file(path: str | Path) -> dict[str, float]:
    data = load_structured(path)
    if not isinstance(data, dict):
        raise UsageError(f"metrics file {path} must hold a map of names to numbers")
    where = f" in metrics file {path}"
    return check_metrics(flatten(data, where=where), where)


# -- what a recorder keeps when a staged run holds what cannot be stored ----------------------


def storable_params(params: Any) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Params that can be stored, made from whatever a staged run holds (never raises).

    Returns (params, changed, dropped): ``changed`` maps each key whose value was turned
    into a string, cut or dropped to why; ``dropped`` maps the repr of each unusable key to
    the start of its value. For recorders of a run that already happened (a live run's end,
    the reaper, ``mlvc run`` after its command), where refusing would lose the run.
    """
    out: dict[str, Any] = {}
    changed: dict[str, str] = {}
    dropped: dict[str, str] = {}
    lowered: dict[str, str] = {}
    items = params.items() if isinstance(params, Mapping) else ()
    for key, value in items:
        try:
            check_key(key)
        except UsageError:
            dropped[_short(repr(key), 200)] = _short(_text(value), 200)
            continue
        twin = lowered.setdefault(key.lower(), key)
        if twin != key:
            changed[key] = f"differs only in case from {twin!r}; dropped {_short(_text(value))}"
            continue
        out[key], why = _storable_value(value)
        if why:
            changed[key] = why
    return out, changed, dropped


def _storable_value(value: Any) -> tuple[Any, str]:
    if isinstance(value, list | tuple | dict):
        value = json.dumps(value, sort_keys=True, default=str)
    try:
        return check_param("", value), ""
    except UsageError:
        pass
    if isinstance(value, int) and not isinstance(value, bool):
        return _short(_text(value), MAX_PARAM_BYTES), "an integer outside the 64-bit range, as text"
    if not isinstance(value, str):
        return _storable_value(str(value))[0], f"a {type(value).__name__}, stored as a string"
    try:
        text, why = value.encode(), ""
    except UnicodeEncodeError:
        text, why = value.encode("utf-8", "backslashreplace"), "text not valid Unicode, escaped"
    if len(text) > MAX_PARAM_BYTES:
        why = f"{len(text)} bytes, cut to the first {MAX_PARAM_BYTES}"
        text = text[:MAX_PARAM_BYTES]
    return text.decode("utf-8", "ignore"), why
