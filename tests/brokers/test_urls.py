"""Store URLs: every form, every flag, bad values, redaction, the round trip through str."""

from __future__ import annotations

import ssl

import pytest

from tidings import Channels, create_store
from tidings.brokers.slots import Node
from tidings.brokers.urls import (
    ClusterAddress,
    MemoryAddress,
    RedisAddress,
    SentinelAddress,
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
        RedisAddress("redis://u:****@h:7000/3", "h", 7000, None, "u", "p@w", 3, None, "app"),
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
    assert address.url == "rediss+cluster://u:****@[::1]:7000,h2:7001/"
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
            "rediss+sentinel://[::1]:26379,[::1]:5000/svc/0",
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
