"""Store URLs: every form, parsed into a frozen address (the one place that does it).

=================================================  ===================================
URL                                                address
=================================================  ===================================
``memory://`` / ``memory://NAME``                  `MemoryAddress`
``redis://[user[:password]@]host[:port][/db]``     `RedisAddress` over TCP
``rediss://...``                                   over TLS (verified by default)
``unix:///path/to/redis.sock[?db=N]``              over a unix socket
``redis+cluster://host:port,host:port/``           `ClusterAddress`
``rediss+cluster://...``                           the same over TLS
``redis+sentinel://host:port,host:port/SERVICE``   `SentinelAddress` (``/SERVICE/db``)
``rediss+sentinel://...``                          the same over TLS (sentinels too)
=================================================  ===================================

Every URL takes ``?namespace=NAME``. Redis URLs take ``client_name`` and, for TLS,
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs=none`` and
``ssl_check_hostname=false``; cluster URLs take ``sharded=1``; sentinel URLs take
``sentinel_username`` and ``sentinel_password`` (the sentinels' own credentials; the
URL's user and password are the master's). Flags accept
``1/true/yes/on`` and ``0/false/no/off``; anything else is an error, as is an unknown
parameter. User names and passwords are percent-decoded, and may hold ``@ / ? #``
unescaped (see `split_userinfo()`). Every address carries ``url``: the URL as
tidings shows it, password redacted (`redact()`), the only form ever printed. It is
canonical (port and database written out, defaults left out) and keeps every
parameter that changes behaviour, so it parses back to the same address, apart
from the passwords (``****``).

This module is pure apart from reading TLS files: no sockets, table-tested.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from ..policies.names import check_namespace
from .slots import Node

__all__ = [
    "Address",
    "ClusterAddress",
    "MemoryAddress",
    "RedisAddress",
    "SentinelAddress",
    "display",
    "parse_store_url",
    "redact",
    "split_userinfo",
]

SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)

#: A sentinel's port when the URL names none.
SENTINEL_PORT = 26379
#: The client name when the URL names none (connections are ``NAME-sub``, ``NAME-pub``).
DEFAULT_CLIENT_NAME = "tidings"
#: What a URL shows instead of a password.
REDACTED = "****"


@dataclass(frozen=True, slots=True)
class MemoryAddress:
    """An in-process hub: private (no name) or shared by name."""

    url: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where and how to connect to one Redis server."""

    url: str  # redacted, for messages
    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket instead of TCP
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: ssl.SSLContext | None = None
    client_name: str = DEFAULT_CLIENT_NAME
    #: The ``ssl_*`` parameters that made ``tls``, canonical (shown in ``url``).
    tls_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Seed nodes of a Redis Cluster, and how to talk to every node."""

    url: str  # redacted, for messages
    seeds: tuple[Node, ...]
    template: RedisAddress  # credentials, TLS and client name, for any node
    sharded: bool = False


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """Sentinels watching one service (a master and its replicas)."""

    url: str  # redacted, for messages
    sentinels: tuple[Node, ...]
    service: str
    template: RedisAddress  # the master's credentials, database, TLS and client name
    sentinel: RedisAddress  # the sentinels' credentials, TLS and client name


Address = MemoryAddress | RedisAddress | ClusterAddress | SentinelAddress


# -- user information: split, quoted, redacted ---------------------------------------

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/{0,2}")
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[^:,\[\]/?#@]+)(?::\d*)?"
#: ``host``, ``host:port``, ``[v6]:port``, or a comma-separated list of them.
_HOSTS = re.compile(rf"{_HOST}(?:,{_HOST})*")


def split_userinfo(url: str) -> tuple[str, str | None, str | None, str]:
    """``scheme://``, user, password and the rest of a URL.

    Random passwords often hold ``/``, ``?``, ``#`` or ``@`` unescaped. The standard
    reading ends the user information at the first ``/?#`` and the last ``@``
    before it; where that leaves a host part that is no host (``u:p/w@host`` reads
    as host ``u``, port ``p``) or a path the scheme does not take, the user
    information runs to the *last* ``@`` instead, keeping the whole password in it
    rather than spilling it into the host, path or query, where it would be
    printed. An ``@`` after a valid host (``?client_name=me@box``) keeps the
    standard reading.

    >>> split_userinfo("redis://u:p/ss@w#rd@host:6379/0")
    ('redis://', 'u', 'p/ss@w#rd', 'host:6379/0')
    >>> split_userinfo("redis://host:6379/0?client_name=me@box")
    ('redis://', None, None, 'host:6379/0?client_name=me@box')
    """
    match = _SCHEME.match(url)
    if match is None:
        return "", None, None, url
    head, rest = match.group(), url[match.end() :]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    tail = rest[len(authority) :]
    userinfo, at, hosts = authority.rpartition("@")
    if "@" in tail and not _plausible(head, hosts, re.split(r"[?#]", tail, maxsplit=1)[0]):
        userinfo, at, _ = rest.rpartition("@")  # a password holding "/", "?" or "#"
    if not at:
        return head, None, None, rest
    user, colon, password = userinfo.partition(":")
    return head, user, password if colon else None, rest[len(userinfo) + 1 :]


def _plausible(head: str, hosts: str, path: str) -> bool:
    """Whether a standard reading makes sense: real hosts, and a path the scheme takes."""
    if head.startswith("unix:"):
        return not hosts  # a socket path, and no host
    if hosts and not _HOSTS.fullmatch(hosts):
        return False
    return re.fullmatch(r"/?\d*/?", path) is not None


def _quote(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in "/?#@" else c for c in text)


def _quote_userinfo(url: str) -> str:
    """The URL with ``/ ? # @`` in its user and password percent-encoded (parseable)."""
    head, user, password, rest = split_userinfo(url)
    if user is None:
        return url
    userinfo = _quote(user) + (f":{_quote(password)}" if password is not None else "")
    return f"{head}{userinfo}@{rest}"


#: A query parameter holding a secret, and its value.
_SECRET_PARAM = re.compile(r"([?&][^=&#]*password[^=&#]*=)[^&#]*", re.IGNORECASE)


def _quote_value(text: str) -> str:
    """A query value as shown: what would end or change it percent-encoded.

    ``@`` too, so that no ``@`` follows the host (`split_userinfo()`), and blanks.
    """
    return "".join(
        f"%{ord(c):02X}" if c in "%&#+@" or c.isspace() or not c.isprintable() else c for c in text
    )


def _query(options: list[tuple[str, str]]) -> str:
    """``?name=value&...`` (values quoted), or ``""`` for no options."""
    text = "&".join(f"{name}={_quote_value(value)}" for name, value in options)
    return f"?{text}" if text else ""


def redact(url: str) -> str:
    """Hide the password of a URL (works on malformed URLs too; see split_userinfo).

    >>> redact("redis://user:secret@host:6379/0")
    'redis://user:****@host:6379/0'
    >>> redact("redis://:a@b/c?d#e@host/0")
    'redis://:****@host/0'
    """
    head, user, password, rest = split_userinfo(url)
    if password is not None:
        url = f"{head}{_quote(user or '')}:{REDACTED}@{rest}"
    # Credentials in the query too (a sentinel's ``sentinel_password=``).
    return _SECRET_PARAM.sub(rf"\1{REDACTED}", url)


def display(url: str, namespace: str | None) -> str:
    """A redacted URL with ``namespace`` added as a query parameter (quoted).

    >>> display("unix:///r.sock?db=2", "shop")
    'unix:///r.sock?db=2&namespace=shop'
    >>> display("redis://h:6379/0", "a&b")
    'redis://h:6379/0?namespace=a%26b'
    """
    if not namespace:
        return url
    return f"{url}{'&' if '?' in url else '?'}namespace={_quote_value(namespace)}"


def _host(host: str) -> str:
    """A host as it is written in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


# -- parsing ----------------------------------------------------------------------


def parse_store_url(url: str) -> tuple[Address, str | None]:
    """The address a store URL names, and its ``?namespace=`` (None if absent).

    Raises:
        TypeError: ``url`` is not a ``str``.
        ValueError: a malformed URL, an unknown scheme or parameter, a bad value;
            the message names the URL with any password redacted.
    """
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a str, not {type(url).__name__}: {url!r}")
    shown = redact(url)
    try:
        parts = urlsplit(_quote_userinfo(url))  # a password's "/?#@" stay in it
        params = _params(parts.query, shown)
    except ValueError as exc:
        raise ValueError(f"malformed store URL {shown!r}: {exc}") from None
    namespace = check_namespace(params.pop("namespace", None)) or None
    scheme = parts.scheme.lower()
    address: Address
    if scheme == "memory":
        address = _memory(parts, shown)
    elif scheme in ("redis", "rediss", "unix"):
        address = _redis(scheme, parts, params, shown)
    elif scheme in ("redis+cluster", "rediss+cluster"):
        address = _cluster(scheme, parts, params, shown)
    elif scheme in ("redis+sentinel", "rediss+sentinel"):
        address = _sentinel(scheme, parts, params, shown)
    else:
        raise ValueError(
            f"unknown scheme {parts.scheme!r} in store URL {shown!r}; use "
            + ", ".join(f"{name}://" for name in SCHEMES[:-1])
            + f" or {SCHEMES[-1]}://"
        )
    if params:
        raise ValueError(
            f"unknown parameter{'s' if len(params) > 1 else ''} "
            f"{', '.join(map(repr, sorted(params)))} in store URL {shown!r}"
        )
    return address, namespace


def _params(query: str, shown: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key in params:
            raise ValueError(f"parameter {key!r} given twice in store URL {shown!r}")
        params[key] = value
    return params


def _flag(params: dict[str, str], name: str, default: bool, shown: str) -> bool:
    value = params.pop(name, None)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"parameter {name}={value!r} is not a boolean in store URL {shown!r}")


def _int(text: str, what: str, shown: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad {what} {text!r} in store URL {shown!r}")
    return int(text)


def _memory(parts: SplitResult, shown: str) -> MemoryAddress:
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(
            f"memory:// URLs take a hub name only, no user, password or port: {shown!r}"
        )
    if parts.path not in ("", "/"):
        raise ValueError(f"memory:// URLs take no path (use memory://NAME): {shown!r}")
    return MemoryAddress(url=f"memory://{parts.netloc}", name=parts.netloc)


def _tls_context(
    params: dict[str, str], shown: str
) -> tuple[ssl.SSLContext, tuple[tuple[str, str], ...]]:
    """Certificates are verified unless the URL says ``ssl_cert_reqs=none``.

    Returns the context and the parameters that made it, canonical, to show: the
    files as given, and the checks only where they differ from the default.
    """
    cafile = params.pop("ssl_ca_certs", None)
    context = ssl.create_default_context(cafile=cafile)
    reqs = params.pop("ssl_cert_reqs", "required").lower()
    if reqs == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif reqs != "required":
        raise ValueError(f"ssl_cert_reqs must be 'required' or 'none', in store URL {shown!r}")
    context.check_hostname = _flag(params, "ssl_check_hostname", context.check_hostname, shown)
    certfile, keyfile = params.pop("ssl_certfile", None), params.pop("ssl_keyfile", None)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    elif keyfile is not None:
        raise ValueError(f"ssl_keyfile needs ssl_certfile, in store URL {shown!r}")
    files = {"ssl_ca_certs": cafile, "ssl_certfile": certfile, "ssl_keyfile": keyfile}
    options = [(name, path) for name, path in files.items() if path is not None]
    # From the context, not the URL: turning ssl_check_hostname on turns
    # verification back on too (ssl does), which the URL does not say.
    if context.verify_mode == ssl.CERT_NONE:
        options.append(("ssl_cert_reqs", "none"))
    elif not context.check_hostname:
        options.append(("ssl_check_hostname", "false"))
    return context, tuple(options)


def _userinfo(parts: SplitResult) -> tuple[str | None, str | None, str]:
    """User, password (percent-decoded) and the redacted ``user:****@`` to show."""
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    shown = ""
    if username is not None or password is not None:
        shown = f"{parts.username or ''}{f':{REDACTED}' if password is not None else ''}@"
    return username, password, shown


def _options(client_name: str, tls_options: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The parameters every Redis URL shows: those that differ from the defaults."""
    named = client_name != DEFAULT_CLIENT_NAME
    return [("client_name", client_name)] * named + list(tls_options)


def _redis(scheme: str, parts: SplitResult, params: dict[str, str], shown: str) -> RedisAddress:
    username, password, userinfo = _userinfo(parts)
    client_name = params.pop("client_name", DEFAULT_CLIENT_NAME)
    if not client_name or any(c.isspace() for c in client_name):
        raise ValueError(f"client_name must be non-empty with no spaces, in store URL {shown!r}")
    if scheme == "unix":
        if not parts.path:
            raise ValueError(
                f"unix:// URLs need a socket path (unix:///path/redis.sock): {shown!r}"
            )
        db = _int(params.pop("db", "0"), "database number", shown)
        query = _query([("db", str(db)), *_options(client_name, ())])
        return RedisAddress(
            url=f"unix://{userinfo}{parts.path}{query}",
            path=parts.path,
            username=username,
            password=password,
            db=db,
            client_name=client_name,
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in store URL {shown!r}") from None
    path = parts.path.strip("/")
    db = _int(path or params.pop("db", "0"), "database number", shown)
    tls: ssl.SSLContext | None = None
    tls_options: tuple[tuple[str, str], ...] = ()
    if scheme == "rediss":
        try:
            tls, tls_options = _tls_context(params, shown)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the TLS files of store URL {shown!r}: {exc}") from None
    host = parts.hostname or "localhost"
    query = _query(_options(client_name, tls_options))
    return RedisAddress(
        url=f"{scheme}://{userinfo}{_host(host)}:{port}/{db}{query}",
        host=host,
        port=port,
        username=username,
        password=password,
        db=db,
        tls=tls,
        client_name=client_name,
        tls_options=tls_options,
    )


def _cluster(scheme: str, parts: SplitResult, params: dict[str, str], shown: str) -> ClusterAddress:
    _, _, hosts = parts.netloc.rpartition("@")
    if parts.path not in ("", "/"):
        raise ValueError(f"Redis Cluster has only database 0: no path in store URL {shown!r}")
    seeds = tuple(_seed(item, shown) for item in hosts.split(",") if item)
    if not seeds:
        raise ValueError(f"no seed node (host:port) in store URL {shown!r}")
    sharded = _flag(params, "sharded", False, shown)
    if _int(params.pop("db", "0"), "database number", shown):  # SELECT fails on a cluster
        raise ValueError(f"Redis Cluster has only database 0: no db in store URL {shown!r}")
    # The per-node details (credentials, TLS, client name) parse like a single server's.
    single = parts._replace(
        scheme="rediss" if scheme == "rediss+cluster" else "redis",
        netloc=parts.netloc.rpartition("@")[0] + "@" * ("@" in parts.netloc) + str(seeds[0]),
        path="",
    )
    template = _redis(single.scheme, single, params, shown)
    _, _, userinfo = _userinfo(parts)
    listed = ",".join(str(seed) for seed in seeds)
    query = _query(
        [("sharded", "1")] * sharded + _options(template.client_name, template.tls_options)
    )
    return ClusterAddress(
        url=f"{scheme}://{userinfo}{listed}/{query}",
        seeds=seeds,
        template=template,
        sharded=sharded,
    )


def _sentinel(
    scheme: str, parts: SplitResult, params: dict[str, str], shown: str
) -> SentinelAddress:
    _, _, hosts = parts.netloc.rpartition("@")
    sentinels = tuple(
        _seed(item if item.rpartition("]")[2].count(":") else f"{item}:{SENTINEL_PORT}", shown)
        for item in hosts.split(",")
        if item
    )
    if not sentinels:
        raise ValueError(f"no sentinel (host:port) in store URL {shown!r}")
    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ValueError(
            f"no service name in store URL {shown!r}: "
            "redis+sentinel://host:26379,host2:26379/SERVICE[/db]"
        )
    sentinel_username = params.pop("sentinel_username", None)
    sentinel_password = params.pop("sentinel_password", None)
    # The master's details (credentials, database, TLS, client name) parse like a
    # single server's; the sentinels share its TLS and client name.
    single = parts._replace(
        scheme="rediss" if scheme == "rediss+sentinel" else "redis",
        netloc=parts.netloc.rpartition("@")[0] + "@" * ("@" in parts.netloc) + str(sentinels[0]),
        path=f"/{db}" if db else "",
    )
    template = _redis(single.scheme, single, params, shown)
    _, _, userinfo = _userinfo(parts)
    listed = ",".join(str(node) for node in sentinels)
    sentinel = RedisAddress(
        url=f"{single.scheme}://{listed}",
        username=sentinel_username,
        password=sentinel_password,
        tls=template.tls,
        client_name=template.client_name,
        tls_options=template.tls_options,
    )
    credentials = []  # the sentinels' own, shown as given (the password redacted)
    if sentinel_username is not None:
        credentials.append(("sentinel_username", sentinel_username))
    if sentinel_password is not None:
        credentials.append(("sentinel_password", REDACTED))
    query = _query(credentials + _options(template.client_name, template.tls_options))
    return SentinelAddress(
        url=f"{scheme}://{userinfo}{listed}/{service}/{template.db}{query}",
        sentinels=sentinels,
        service=service,
        template=template,
        sentinel=sentinel,
    )


def _seed(item: str, shown: str) -> Node:
    """``host:port`` or ``[ipv6]:port``."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":")
        if host.endswith(":"):  # "fe80::1" is no host "fe80:" with port 1
            raise ValueError(
                f"bad seed {item!r}: an IPv6 address needs brackets ([::1]:7000), "
                f"in store URL {shown!r}"
            )
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad seed {item!r} (want host:port) in store URL {shown!r}")
    return Node(host, int(port))
