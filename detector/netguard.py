"""The private-address guard: a link may only make us talk to public internet hosts.

Every host is resolved and *all* its addresses must be globally routable; loopback,
RFC 1918, link-local (cloud metadata), CGNAT, multicast and reserved ranges are
refused. ``allow`` names hosts exempt from the rule (tests serve on 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import PrivateAddress, Unreachable, UnsupportedURL


def is_public_ip(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsupportedURL(f"Only http and https links can be checked, not {parts.scheme or 'this'!r}.")
    host = parts.hostname
    if not host:
        raise UnsupportedURL("The link has no host name.")
    if parts.username or parts.password:
        raise UnsupportedURL("Links with a user name or password are not accepted.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addrs = resolve(host, port)
    if host in allow or any(a in allow for a in addrs):
        return addrs
    bad = [a for a in addrs if not is_public_ip(a)]
    if bad:
        raise PrivateAddress(
            f"The link's host {host!r} resolves to a private or local address ({bad[0]}); "
            "only public internet links can be checked."
        )
    return addrs


def guarded_session(allow: list[str] | tuple[str, ...] = ()):
    """A ``requests.Session`` whose every connection is checked *after* it is made.

    ``check_url`` vets the addresses a name resolves to before the request; a name
    that resolves again to a private address at connect time (DNS rebinding) is
    caught here, on the socket's real peer address, before a byte is sent.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    allowed = tuple(allow)

    def vet(conn, sock):
        peer = sock.getpeername()[0]
        if peer not in allowed and conn.host not in allowed and not is_public_ip(peer):
            sock.close()
            raise PrivateAddress(f"The link's host {conn.host!r} connected to a private address ({peer}); "
                                 "only public internet links can be checked.")
        return sock

    class GuardedHTTP(HTTPConnection):
        def _new_conn(self):
            return vet(self, super()._new_conn())

    class GuardedHTTPS(HTTPSConnection):
        def _new_conn(self):
            return vet(self, super()._new_conn())

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTP

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPS

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}

    session = requests.Session()
    session.trust_env = False  # no proxies from the environment: the guard must see the real peer
    session.mount("http://", GuardedAdapter())
    session.mount("https://", GuardedAdapter())
    return session
