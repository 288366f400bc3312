"""A real local Sentinel deployment: a master, two replicas, three sentinels."""

from __future__ import annotations

import time

import redis

from tests.redis_server import RedisServer

SERVICE = "tidings-test"


class RedisSentinel:
    """Redis processes on free ports, replicating and watched, torn down at close."""

    def __init__(self, replicas: int = 2, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.down_after_ms = down_after_ms
        self.servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        try:
            master = RedisServer()
            self.servers.append(master)
            for _ in range(replicas):
                self.servers.append(RedisServer("--replicaof", "127.0.0.1", str(master.port)))
            config = (
                f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            for _ in range(sentinels):
                self.sentinels.append(RedisServer("--sentinel", config=config))
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    def url(self, *, sentinels: list[RedisServer] | None = None, **params: str) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels or self.sentinels)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"redis+sentinel://{hosts}/{SERVICE}" + (f"?{query}" if query else "")

    def sentinel(self) -> redis.Redis:
        alive = next(s for s in self.sentinels if s.process is not None)
        return alive.client(decode_responses=True)

    def master(self) -> RedisServer:
        """The server the sentinels name as master now."""
        _, port = self.sentinel().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return next(s for s in self.servers if s.port == int(port))

    def wait_healthy(self, limit: float = 30) -> None:
        """Until every live sentinel knows the master, its replicas and the other
        sentinels, and every live replica is in sync with the master they name."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if self._healthy():
                    return
            except (redis.RedisError, StopIteration, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError("the sentinel deployment did not become healthy")

    def _healthy(self) -> bool:
        alive_servers = [s for s in self.servers if s.process is not None]
        alive_sentinels = [s for s in self.sentinels if s.process is not None]
        masters = set()
        for sentinel in alive_sentinels:
            client = sentinel.client(decode_responses=True)
            state = client.execute_command("SENTINEL", "MASTER", SERVICE)
            state = (
                dict(zip(state[::2], state[1::2], strict=True))
                if isinstance(state, list)
                else state
            )
            if "s_down" in state.get("flags", "") or "o_down" in state.get("flags", ""):
                return False
            masters.add(int(state["port"]))
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            if int(state["num-slaves"]) < len(alive_servers) - 1:
                return False
        if len(masters) != 1:
            return False
        [port] = masters
        for server in alive_servers:
            info = server.client().info("replication")
            if server.port == port:
                if info["role"] != "master":
                    return False
            elif info["role"] != "slave" or info.get("master_link_status") != "up":
                return False
        return True

    def close(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.close()
