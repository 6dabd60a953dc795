"""Where a webhook may be sent: https to a public address, unless ``allow_private``.

Checked twice: when the endpoint is added, and at every delivery after DNS resolution, and
the delivery then connects to the very address that was checked (so a name that resolved to a
public address when checked cannot be rebound to 127.0.0.1 or 169.254.169.254 for the
request: DNS rebinding). ``allow_private`` (tests, development) permits http and private,
loopback and link-local addresses.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from ..errors import AddressRefused


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_public(address: str) -> bool:
    """Whether ``address`` is a global unicast address (not private, loopback, link-local,
    multicast, reserved, shared or unspecified; IPv4-mapped IPv6 judged as its IPv4)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a webhook URL; AddressRefused if it is not an http(s) URL."""
    if not url or any(c in url for c in "\x00\r\n\t "):
        raise AddressRefused(f"invalid webhook URL {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused(f"webhook URL {url!r}: use an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused(
            f"webhook URL for {parts.hostname!r} carries credentials; leave them out "
            "(receivers check the webhook signature instead)"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AddressRefused(f"webhook URL {url!r}: invalid port") from None
    return parts.scheme, parts.hostname, port


def check_url(url: str, allow_private: bool = False, resolve: Callable | None = None) -> list[str]:
    """The addresses ``url``'s host resolves to, all of them allowed; AddressRefused if the
    URL is not https (without ``allow_private``), cannot be resolved, or any address is
    private (without ``allow_private``)."""
    scheme, host, port = split(url)
    if scheme != "https" and not allow_private:
        raise AddressRefused(
            f"webhook URL {url!r}: only https:// is allowed (--allow-private permits http for "
            "development)"
        )
    try:
        addresses = (resolve or _resolve)(host, port)
    except (OSError, UnicodeError) as e:
        raise AddressRefused(f"webhook host {host!r} cannot be resolved: {e}") from None
    if not addresses:
        raise AddressRefused(f"webhook host {host!r} resolves to no address")
    if not allow_private:
        bad = [a for a in addresses if not is_public(a)]
        if bad:
            raise AddressRefused(
                f"webhook host {host!r} resolves to the private address {bad[0]}; refused "
                "(pass --allow-private for a receiver on this machine or network)"
            )
    return addresses
