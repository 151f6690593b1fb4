"""Who may talk to the admin API: the Host, Origin and Sec-Fetch-Site rules.

The admin API listens on a plain-HTTP port, usually loopback, and a browser on the same
machine can reach that port from any web page. Two attacks follow, and neither needs the
token when none is set:

* Cross-site requests. A hostile page can send a "simple" POST (text/plain body, no
  preflight) or read answers if we ever sent CORS headers. Browsers mark such requests with
  `Origin` (and `Sec-Fetch-Site: cross-site`), so any Origin that is not the node's own is
  refused, for every method.
* DNS rebinding. A hostile name first resolves to the attacker, then to 127.0.0.1; the page
  then talks to us "same-origin", but its requests carry `Host: evil.example:8000`. So the
  Host header must name this node: a loopback name, the bound address, the node's own host
  name when bound to every interface, or an `[admin] allowed_hosts` entry.

An IP literal can never be the result of rebinding (a browser sends the name it resolved,
and an attacker cannot make it resolve a literal), which is why a node bound to 0.0.0.0 / ::
accepts any IP literal on its port: that is how it is reached by address from elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str, default_port: int | None = None) -> tuple[str, int | None] | None:
    """`name`, `name:port`, `[v6]` or `[v6]:port` as (lower-case host, port).

    None for anything else (empty, spaces, user info, several values joined by a proxy),
    so a malformed Host is refused rather than guessed at.
    """
    value = value.strip()
    if not value or any(c.isspace() or c in "@,/\\?#" for c in value):
        return None
    port_text = ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, colon, port_text = value.partition(":")
        if colon and not port_text:
            return None
        if ":" in port_text or not host:
            return None
    if port_text:
        if (not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5
                or not 0 < int(port_text) < 65536):
            return None
        return host.lower(), int(port_text)
    return host.lower(), default_port


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """The Host values a node answers to.

    `extra` are the `[admin] allowed_hosts` entries: a bare name matches any port (a reverse
    proxy or a published container port rarely keeps ours), `name:port` only that port.
    """

    extra: tuple[tuple[str, int | None], ...] = ()
    own_names: frozenset[str] = frozenset()

    @classmethod
    def build(cls, allowed_hosts: Iterable[str] = (),
              own_names: Iterable[str] = ()) -> HostPolicy:
        extra = []
        for entry in allowed_hosts:
            parsed = split_host(entry)
            if parsed is not None:
                extra.append(parsed)
        names = {n.lower() for n in own_names if n}
        return cls(tuple(extra), frozenset(names))

    def allows(self, host_header: str, bound_host: str, bound_port: int) -> bool:
        parsed = split_host(host_header, default_port=80)
        if parsed is None:
            return False
        host, port = parsed
        for name, extra_port in self.extra:
            if host == name and extra_port in (None, port):
                return True
        if port != bound_port:
            return False
        bound = bound_host.strip("[]").lower()
        if host in LOOPBACK_NAMES or host == bound:
            return True
        if bound in WILDCARD_HOSTS:
            return host in self.own_names or is_ip_literal(host)
        return False


def own_host_names() -> frozenset[str]:
    """The names this machine calls itself, accepted when bound to every interface."""
    try:
        name = socket.gethostname()
    except OSError:  # pragma: no cover - no host name configured
        return frozenset()
    return frozenset({name.lower()}) if name else frozenset()


def same_origin(origin: str, host_header: str) -> bool:
    """Whether `Origin` is scheme://host[:port] of the Host the request was sent to.

    Both http and https count: TLS may be terminated by a proxy in front of the node, and
    the Host check has already made sure the name is ours.
    """
    try:
        parts = urlsplit(origin.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.username:
            return False
        origin_host = split_host(parts.netloc, default_port=DEFAULT_PORTS[scheme])
    except ValueError:
        return False
    target = split_host(host_header, default_port=DEFAULT_PORTS[scheme])
    return origin_host is not None and origin_host == target


def refusal(headers: dict[str, str] | object, *, path: str, bound_host: str, bound_port: int,
            policy: HostPolicy, open_paths: frozenset[str] = frozenset()) -> str | None:
    """Why the request must be refused with 403, or None. `headers` is a Headers mapping.

    `open_paths` answer any Host (health checks of load balancers use odd ones) but still
    never a foreign Origin.
    """
    get = headers.get  # type: ignore[attr-defined]
    if (get("Sec-Fetch-Site") or "").strip().lower() == "cross-site":
        return "cross-site requests are refused (Sec-Fetch-Site: cross-site)"
    host = get("Host") or ""
    host_ok = policy.allows(host, bound_host, bound_port)
    origin = get("Origin")
    if origin is not None and not (host_ok and same_origin(origin, host)):
        return (f"Origin {origin[:100]!r} is not this node's own origin; cross-site requests "
                "are refused")
    if not host_ok and path not in open_paths:
        return (f"Host {host[:100]!r} is not an address of this node; add it to [admin] "
                "allowed_hosts if it should be")
    return None
