"""The private-address guard: a link may only make us talk to public internet hosts.

Every host is resolved and *all* its addresses must be globally routable; loopback,
RFC 1918, link-local (cloud metadata), CGNAT, multicast and reserved ranges are
refused, and so is every IPv6 form that reaches or embeds one of them (IPv4-mapped,
-compatible and -translated, 6to4, NAT64, Teredo, site-local). ``allow`` names hosts
exempt from the rule, as ``host`` or ``host:port`` (tests serve on 127.0.0.1).

Two layers: :func:`check_url` decides on a link before anything is sent;
:func:`guard_connections` checks *every* socket the current thread connects, whoever
opens it (requests, yt-dlp's extractor, downloader, manifest and fragment requests), on the
address it is about to reach, by a ``socket.connect`` audit hook, so a name that resolves
again to a private address (DNS rebinding) is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

from .errors import PrivateAddress, Unreachable, UnsupportedURL

# IPv6 ranges refused whatever they carry: NAT64 local-use (RFC 8215, embeds any IPv4 of
# the operator's choice), site-local (deprecated, RFC 3879), Teredo (embeds an obfuscated
# client address and a relay).
_REFUSED_V6 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b:1::/48", "fec0::/10", "2001::/32"))
# IPv6 ranges whose last 32 bits are an IPv4 address, which is what the address reaches.
_LAST32_V4 = tuple(ipaddress.ip_network(n) for n in (
    "::ffff:0:0/96",    # IPv4-mapped
    "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
    "::/96",            # IPv4-compatible (deprecated; also :: and ::1)
    "64:ff9b::/96",     # NAT64 well-known prefix (RFC 6052)
))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address embeds (and so reaches), if it is of such a form."""
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48
        return ip.sixtofour
    for net in _LAST32_V4:
        if ip in net:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_ip(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in net for net in _REFUSED_V6):
            return False
        ip = embedded_ipv4(ip) or ip
    return ip.is_global and not ip.is_multicast


def _allow_entry(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def is_allowed(allow: Sequence[str], host: str | None, port: int | None, addr: str | None = None) -> bool:
    """Whether ``allow`` exempts this host (or the address it resolved to) on this port."""
    for entry in allow:
        h, p = _allow_entry(entry)
        if h in (host, addr) and (p is None or p == port):
            return True
    return False


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise Unreachable(f"The address {host!r} could not be resolved.") from e
    return sorted({info[4][0] for info in infos})


def check_url(url: str, allow: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Raise unless ``url`` is http(s) and every address of its host is public.

    Returns the resolved addresses.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range or a broken [IPv6] literal
    except ValueError as e:
        raise UnsupportedURL(f"The link is not a valid web address ({e}).") from e
    if parts.scheme not in ("http", "https"):
        raise UnsupportedURL(f"Only http and https links can be checked, not {parts.scheme or 'this'!r}.")
    host = parts.hostname
    if not host:
        raise UnsupportedURL("The link has no host name.")
    if parts.username or parts.password:
        raise UnsupportedURL("Links with a user name or password are not accepted.")
    port = port or (443 if parts.scheme == "https" else 80)
    addrs = resolve(host, port)
    if is_allowed(allow, host, port) or any(is_allowed(allow, host, port, a) for a in addrs):
        return addrs
    bad = [a for a in addrs if not is_public_ip(a)]
    if bad:
        raise PrivateAddress(
            f"The link's host {host!r} resolves to a private or local address ({bad[0]}); "
            "only public internet links can be checked."
        )
    return addrs


# --------------------------------------------------------------------------- every socket
class ConnectionGuard:
    """What :func:`guard_connections` allowed and what it stopped."""

    def __init__(self, allow: Sequence[str]):
        self.allow = tuple(allow)
        self.blocked: list[str] = []  # "address:port" of each refused connection

    def refusal(self) -> PrivateAddress:
        return PrivateAddress(f"The link made us connect to a private address ({self.blocked[0]}); "
                              "only public internet links can be checked.")


_state = threading.local()
_hook_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    if event != "socket.connect":
        return
    guard: ConnectionGuard | None = getattr(_state, "guard", None)
    if guard is None:
        return
    sock, address = args
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    host, port = str(address[0]), int(address[1])
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addrs = [host]
    except ValueError:  # connect() given a name resolves it itself: vet what it will reach
        addrs = resolve(host, port)
    for addr in addrs:
        if not is_allowed(guard.allow, host, port, addr) and not is_public_ip(addr):
            guard.blocked.append(f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")
            raise PrivateAddress(f"The link's host {host!r} connected to a private address ({addr}); "
                                 "only public internet links can be checked.")


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:  # audit hooks cannot be removed: one, idle outside a guard
            sys.addaudithook(_audit)
            _hook_installed = True


@contextmanager
def guard_connections(allow: Sequence[str] = ()) -> Iterator[ConnectionGuard]:
    """Refuse every socket connection this thread makes to a non-public address.

    The check runs in a ``socket.connect`` audit hook, on the address the socket is
    about to reach, so it holds for any library's HTTP client. It is per thread: the
    caller must keep the guarded work in this thread (yt-dlp: one fragment at a time).
    A library may swallow the refusal; ``guard.blocked`` still records it.
    """
    _install_hook()
    previous = getattr(_state, "guard", None)
    guard = ConnectionGuard(allow)
    _state.guard = guard
    try:
        yield guard
    finally:
        _state.guard = previous
