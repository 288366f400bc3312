"""Store URLs: every form, every flag, bad values, redaction, the round trip through str."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme

from tidings import Channels, create_store
from tidings.brokers.slots import Node
from tidings.brokers.urls import (
    REDACTED,
    Address,
    ClusterAddress,
    MemoryAddress,
    RedisAddress,
    SentinelAddress,
    display,
    parse_store_url,
    redact,
    split_userinfo,
)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:****@host:6379/0"),
        ("redis://:secret@host", "redis://:****@host"),
        ("rediss://u:p%40ss@h/1?namespace=x", "rediss://u:****@h/1?namespace=x"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://user@host", "redis://user@host"),
        ("memory://", "memory://"),
        ("redis://u:pw@host:notaport", "redis://u:****@host:notaport"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("url", "userinfo", "rest"),
    [
        # Passwords holding "/", "?", "#" or "@" unescaped stay whole.
        ("redis://u:p/ss@w#rd@host:6379/0", ("u", "p/ss@w#rd"), "host:6379/0"),
        ("redis://u:1234/5@host:6379/0", ("u", "1234/5"), "host:6379/0"),
        ("redis://:a@b/c?d#e@host/0", ("", "a@b/c?d#e"), "host/0"),
        ("unix://u:p/w@/tmp/r.sock", ("u", "p/w"), "/tmp/r.sock"),
        ("redis:/u:s3cr3t@h", ("u", "s3cr3t"), "h"),
        # An "@" after a real host is in a query value or a socket path.
        ("redis://localhost:6379/0?client_name=me@box", (None, None), None),
        ("rediss://cache:6380/0?ssl_ca_certs=/etc/redis@main/ca.pem", (None, None), None),
        ("redis+cluster://h1:7000,h2:7001/?client_name=a@b", (None, None), None),
        ("redis://[::1]:6379/0?client_name=a@b", (None, None), None),
        ("unix:///tmp/a@b.sock?db=0", (None, None), None),
        ("redis://u:p@host:6379/0?client_name=me@box", ("u", "p"), None),
        ("redis://user@host", ("user", None), "host"),
    ],
)
def test_split_userinfo_reads_passwords_whole(
    url: str, userinfo: tuple[str | None, str | None], rest: str | None
) -> None:
    _, user, password, after = split_userinfo(url)
    assert (user, password) == userinfo
    if rest is not None:
        assert after == rest
    assert password is None or password not in redact(url)


#: url -> (the address's fields that matter, the namespace); str() shows address.url.
FORMS = [
    ("memory://", MemoryAddress("memory://"), None),
    ("memory://hub?namespace=shop", MemoryAddress("memory://hub", "hub"), "shop"),
    ("redis://", RedisAddress("redis://localhost:6379/0"), None),
    (
        "redis://u:p%40w@h:7000/3?client_name=app&namespace=a:b",
        RedisAddress(
            "redis://u:****@h:7000/3?client_name=app", "h", 7000, None, "u", "p@w", 3, None, "app"
        ),
        "a:b",
    ),
    ("redis://h?db=4", RedisAddress("redis://h:6379/4", "h", db=4), None),
    ("redis://[::1]:6380", RedisAddress("redis://[::1]:6380/0", "::1", 6380), None),
    ("redis://:pw@h", RedisAddress("redis://:****@h:6379/0", "h", password="pw"), None),
    (
        "unix:///tmp/r.sock?db=2&namespace=shop",
        RedisAddress("unix:///tmp/r.sock?db=2", path="/tmp/r.sock", db=2),
        "shop",
    ),
]


@pytest.mark.parametrize(("url", "address", "namespace"), FORMS)
def test_every_form_parses_to_its_address(
    url: str, address: MemoryAddress | RedisAddress, namespace: str | None
) -> None:
    parsed, ns = parse_store_url(url)
    assert parsed == address
    assert ns == namespace
    store = create_store(url)
    shown = address.url + (
        f"{'&' if '?' in address.url else '?'}namespace={namespace}" if namespace else ""
    )
    assert repr(store) == f"Store({shown!r})"
    assert str(Channels(store)) == shown
    # The round trip: what is shown parses to the same place (passwords aside).
    again, ns_again = parse_store_url(shown.replace("****", "x"))
    assert (type(again), again.url, ns_again) == (type(address), address.url, namespace)


@pytest.mark.parametrize(
    ("url", "sharded"),
    [
        ("redis+cluster://h1:7000,h2:7001/", False),
        ("redis+cluster://h1:7000/?sharded=1", True),
        ("redis+cluster://h1:7000/?sharded=yes", True),
        ("redis+cluster://h1:7000/?sharded=off", False),
    ],
)
def test_cluster_urls(url: str, sharded: bool) -> None:
    address, _ = parse_store_url(url)
    assert isinstance(address, ClusterAddress)
    assert address.sharded is sharded
    assert address.seeds[0] == Node("h1", 7000)
    assert address.template.port == 7000


def test_cluster_credentials_and_tls_apply_to_every_node() -> None:
    address, _ = parse_store_url(
        "rediss+cluster://u:s3cret@[::1]:7000,h2:7001/?ssl_cert_reqs=none&client_name=c"
    )
    assert isinstance(address, ClusterAddress)
    assert (
        address.url
        == "rediss+cluster://u:****@[::1]:7000,h2:7001/?client_name=c&ssl_cert_reqs=none"
    )
    assert (address.template.username, address.template.password) == ("u", "s3cret")
    assert address.template.client_name == "c"
    assert isinstance(address.template.tls, ssl.SSLContext)
    assert address.template.tls.verify_mode is ssl.CERT_NONE


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis+cluster://h1:7000/?sharded=maybe", "sharded='maybe' is not a boolean"),
        ("rediss://h/?ssl_check_hostname=perhaps", "not a boolean"),
        ("rediss://h/?ssl_cert_reqs=optional", "ssl_cert_reqs"),
        ("rediss://h/?ssl_keyfile=k.pem", "needs ssl_certfile"),
        ("rediss://h/?ssl_ca_certs=/nonexistent/ca.pem", "cannot load the TLS files"),
        ("redis://h:99999", "bad port"),
        ("redis://h/x", "bad database number 'x'"),
        ("redis://h/?client_name=a%20b", "client_name"),
        ("unix://", "socket path"),
        ("redis+cluster://h1:7000/2", "only database 0"),
        ("redis+cluster://h1:7000/?db=3", "only database 0"),
        ("redis+cluster:///", "no seed"),
        ("redis+cluster://h1:x/", "bad seed"),
        ("redis+sentinel://h1:26379/", "no service name"),
        ("redis+sentinel:///svc", "no sentinel"),
        ("redis+sentinel://h1/svc/x", "bad database number 'x'"),
        ("redis+sentinel://h1:x/svc", "bad seed"),
        ("redis://h/?bogus=1&other=2", "unknown parameters 'bogus', 'other'"),
    ],
)
def test_bad_values_are_named(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_store_url(url)


def test_an_unbracketed_ipv6_seed_is_refused_but_a_bracketed_one_works() -> None:
    with pytest.raises(ValueError, match="needs brackets"):
        parse_store_url("redis+cluster://fe80::1")
    address, _ = parse_store_url("redis+cluster://[fe80::1]:7000/")
    assert isinstance(address, ClusterAddress)
    assert address.seeds == (Node("fe80::1", 7000),)


@pytest.mark.parametrize(
    ("url", "sentinels", "service", "db", "shown"),
    [
        (
            "redis+sentinel://h1,h2:26380/mymaster",
            (Node("h1", 26379), Node("h2", 26380)),
            "mymaster",
            0,
            "redis+sentinel://h1:26379,h2:26380/mymaster/0",
        ),
        (
            "redis+sentinel://u:s3cret@h1:5000/svc/2",
            (Node("h1", 5000),),
            "svc",
            2,
            "redis+sentinel://u:****@h1:5000/svc/2",
        ),
        (
            "rediss+sentinel://[::1],[::1]:5000/svc?ssl_cert_reqs=none",
            (Node("::1", 26379), Node("::1", 5000)),
            "svc",
            0,
            "rediss+sentinel://[::1]:26379,[::1]:5000/svc/0?ssl_cert_reqs=none",
        ),
    ],
)
def test_sentinel_urls(
    url: str, sentinels: tuple[Node, ...], service: str, db: int, shown: str
) -> None:
    address, _ = parse_store_url(url)
    assert isinstance(address, SentinelAddress)
    assert (address.sentinels, address.service, address.template.db) == (sentinels, service, db)
    assert address.url == shown
    assert create_store(url).url == shown
    again, _ = parse_store_url(shown.replace("****", "x"))
    assert isinstance(again, SentinelAddress)
    assert again.url == shown


def test_sentinel_credentials_are_the_master_s_and_the_sentinels_own() -> None:
    address, namespace = parse_store_url(
        "rediss+sentinel://app:m4ster@h1/svc?sentinel_username=watch&sentinel_password=s3nt"
        "&client_name=c&ssl_cert_reqs=none&namespace=shop"
    )
    assert isinstance(address, SentinelAddress)
    assert namespace == "shop"
    assert (address.template.username, address.template.password) == ("app", "m4ster")
    assert (address.sentinel.username, address.sentinel.password) == ("watch", "s3nt")
    assert address.sentinel.client_name == address.template.client_name == "c"
    assert address.sentinel.tls is address.template.tls is not None
    for secret in ("m4ster", "s3nt"):
        assert secret not in address.url
        assert secret not in repr(address)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:1/svc?sentinel_password=S3CRET&bogus=1",
        "redis+sentinel://h:1/svc?sentinel_password=S3CRET&client_name=a%20b",
        "redis+sentinel://h:1/svc/x?sentinel_password=S3CRET",
        "redis+sentinel://h:1/svc?sentinel_password=S3CRET&sentinel_password=again",
    ],
)
def test_a_password_in_the_query_never_shows_in_an_error(url: str) -> None:
    with pytest.raises(ValueError, match="store URL") as refused:
        parse_store_url(url)
    assert "S3CRET" not in str(refused.value)
    assert "again" not in str(refused.value)
    assert "S3CRET" not in redact(url)


# -- the round trip: every form's shown URL parses back to the same address -----------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real CA, certificate, key and combined files, in a folder whose name needs quoting."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    folder = tmp_path_factory.mktemp("tls") / "a@b c&d"
    folder.mkdir()
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key", "both")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    cert.private_key_and_cert_chain_pem.write_to_path(str(files["both"]))
    return {name: quote(str(path)) for name, path in files.items()}


#: Every form and parameter the module takes; ``{ca}``, ``{cert}``, ``{key}`` and
#: ``{both}`` are TLS files. Every password holds "SECRET", to check it never shows.
ROUND_TRIP = [
    "memory://",
    "memory://hub-1",
    "memory://hub?namespace=shop",
    "redis://",
    "redis://h",
    "redis://h?db=4&namespace=a:b",
    "redis://u:SE%40CRET@h:7000/3?client_name=app",
    "redis://:SECRET@h",
    "redis://u:@h",  # an empty password is still a password (AUTH u "")
    "redis://user@[::1]:6380",
    "redis://u:SE/CR@T#ET@host:6379/0",  # "/@#" unescaped
    "redis://h/0?client_name=me@box%26co&namespace=x%26y%20z",
    "rediss://h",
    "rediss://u:SECRET@h:6380/2?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}",
    "rediss://h?ssl_certfile={both}&client_name=app",
    "rediss://h?ssl_cert_reqs=none",
    "rediss://h?ssl_cert_reqs=NONE&ssl_check_hostname=no",
    "rediss://h?ssl_check_hostname=false",
    "rediss://h?ssl_check_hostname=yes",
    "rediss://h?ssl_cert_reqs=none&ssl_check_hostname=on",  # (ssl verifies again)
    "unix:///tmp/r.sock",
    "unix://u:SECRET@/tmp/r.sock?db=2&client_name=app&namespace=shop",
    "redis+cluster://h:7000/?sharded=1&namespace=shop",
    "redis+cluster://h1:7000,h2:7001/",
    "redis+cluster://h1:7000/?sharded=yes",
    "redis+cluster://h1:7000/?sharded=off&db=0",
    "redis+cluster://u:SECRET@[::1]:7000,h2:7001/?client_name=c",
    "rediss+cluster://u:SECRET@h1:7000/?sharded=1&ssl_cert_reqs=none&client_name=c",
    "rediss+cluster://h1:7000,h2:7000/?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}",
    "redis+sentinel://h1,h2:26380/mymaster",
    "redis+sentinel://app:SECRET1@h1/svc/2?sentinel_username=watch&sentinel_password=SECRET2"
    "&client_name=c&namespace=shop",
    "redis+sentinel://h1:5000/svc?db=3&sentinel_password=SE%26CRET",
    "redis+sentinel://h1/svc?sentinel_username=w%40x&sentinel_password=",
    "rediss+sentinel://[::1],[::1]:5000/svc?ssl_ca_certs={ca}&ssl_check_hostname=0",
    "rediss+sentinel://u:SECRET@h1/svc/1?ssl_cert_reqs=none&sentinel_username=w",
]


def comparable(value: Any) -> Any:
    """An address as a tree of plain values, for ==.

    Normalised on purpose, and only these: a password (the address's, a cluster's or
    sentinel's template's, the sentinels' own) counts only as given or not, since the
    shown URL holds ``****`` in its place, which parses back as the password
    ``****``; a TLS context (which compares by identity) counts as what it checks and
    the CAs it trusts (its client certificate is in ``tls_options``). Every other
    field, ``url`` included, must be equal.
    """
    if isinstance(value, ssl.SSLContext):
        cas = sorted(repr(sorted(ca.items())) for ca in value.get_ca_certs())
        return ("SSLContext", value.verify_mode, value.check_hostname, cas)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if "password" in fields:
            fields["password"] = None if fields["password"] is None else REDACTED
        return (type(value).__name__, {name: comparable(v) for name, v in fields.items()})
    if isinstance(value, tuple):
        return tuple(comparable(item) for item in value)
    return value


def passwords(address: Address) -> list[str]:
    if isinstance(address, RedisAddress):
        return [address.password] if address.password else []
    if isinstance(address, ClusterAddress):
        return passwords(address.template)
    if isinstance(address, SentinelAddress):
        return passwords(address.template) + passwords(address.sentinel)
    return []


@pytest.mark.parametrize("template", ROUND_TRIP)
def test_the_shown_url_parses_back_to_the_same_address(
    template: str, tls_files: dict[str, str]
) -> None:
    url = template.format(**tls_files)
    address, namespace = parse_store_url(url)
    shown = display(address.url, namespace)
    assert repr(create_store(url)) == f"Store({shown!r})"
    assert str(Channels(url)) == shown
    again, namespace_again = parse_store_url(shown)
    assert namespace_again == namespace
    assert comparable(again) == comparable(address)
    assert display(again.url, namespace_again) == shown  # canonical: shown as it was
    assert "SECRET" not in shown
    for password in passwords(address):
        assert password not in shown
        assert quote(password, safe="") not in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "redis+cluster://h:7000/?sharded=1&namespace=shop",
            "redis+cluster://h:7000/?sharded=1&namespace=shop",
        ),
        ("redis+cluster://h:7000?sharded=true", "redis+cluster://h:7000/?sharded=1"),
        ("redis+cluster://h:7000/?sharded=0", "redis+cluster://h:7000/"),
        ("redis://h?client_name=tidings", "redis://h:6379/0"),
        ("redis://h?client_name=a%40b%26c", "redis://h:6379/0?client_name=a%40b%26c"),
        ("unix:///r.sock?client_name=app", "unix:///r.sock?db=0&client_name=app"),
        ("rediss://h?ssl_cert_reqs=required&ssl_check_hostname=1", "rediss://h:6379/0"),
        ("rediss://h?ssl_check_hostname=off", "rediss://h:6379/0?ssl_check_hostname=false"),
        ("rediss://h?ssl_cert_reqs=None", "rediss://h:6379/0?ssl_cert_reqs=none"),
        (
            "rediss+sentinel://h/svc?client_name=c&sentinel_password=SECRET&sentinel_username=w",
            "rediss+sentinel://h:26379/svc/0?sentinel_username=w&sentinel_password=****"
            "&client_name=c",
        ),
        ("memory://hub?namespace=a%23b", "memory://hub?namespace=a%23b"),
    ],
)
def test_the_shown_url_is_canonical(url: str, shown: str) -> None:
    assert str(Channels(url)) == shown


def test_a_cluster_shown_sharded_stays_sharded() -> None:
    store = create_store("redis+cluster://h:7000/?sharded=1&namespace=shop")
    again, _ = parse_store_url(str(Channels(store)))
    assert isinstance(again, ClusterAddress)
    assert again.sharded
    assert not store.broker.supports_patterns
    assert not create_store(str(Channels(store))).broker.supports_patterns


def test_the_tls_files_show_where_a_server_s_connections_use_them(
    tls_files: dict[str, str],
) -> None:
    url = "rediss://h?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}".format(**tls_files)
    address, _ = parse_store_url(url)
    assert isinstance(address, RedisAddress)
    paths = {name: Path(value) for name, value in address.tls_options}
    assert set(paths) == {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
    assert all(path.is_file() for path in paths.values())
