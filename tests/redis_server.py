"""Real redis-server processes for the tests: started on free ports, killed at will."""

from __future__ import annotations

import socket
from pathlib import Path

import redis

from tidings import testing
from tidings.testing import free_port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(1000):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer(testing.RedisServer):
    """A private redis-server (``tidings.testing.RedisServer``), with what the suite
    needs besides: a unix socket, a config file given first (a sentinel's, which it
    rewrites as it learns), and a redis-py client."""

    def __init__(
        self,
        *args: str,
        unix_socket: bool = False,
        port: int | None = None,
        config: str | None = None,
    ) -> None:
        self._unix_socket = unix_socket
        self._config = config
        self.socket: Path | None = None
        self.config: Path | None = None
        super().__init__(*args, port=port)

    def command(self) -> list[str]:
        if self._unix_socket and self.socket is None:
            self.socket = self.dir / "redis.sock"
        if self._config is not None and self.config is None:
            self.config = self.dir / "redis.conf"
            self.config.write_text(self._config)
        command = super().command()
        if self.config is not None:
            command.insert(1, str(self.config))
        if self.socket is not None:
            command += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        return command

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)  # type: ignore[arg-type]

    def user(self, name: str, *commands: str, channels: str = "*") -> str:
        """An ACL user ``name`` (password "pw") with every key, the ``channels``
        glob, and every command but what ``commands`` takes away or gives
        (``"-@scripting"``); the URL that logs in as it."""
        self.client().acl_setuser(
            name,
            enabled=True,
            passwords=["+pw"],
            commands=["+@all", *commands],
            keys=["~*"],
            channels=[channels],
        )
        return f"redis://{name}:pw@127.0.0.1:{self.port}"
