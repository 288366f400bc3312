"""A real local Redis Cluster (3 masters, 3 replicas) on free ports."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.redis_server import RedisServer, free_cluster_port


class RedisCluster:
    """Six cluster-enabled redis-server processes joined with `redis-cli --cluster`."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.servers: list[RedisServer] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self.servers.append(
                    RedisServer(
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-replica-validity-factor",
                        "0",
                        port=free_cluster_port(),
                    )
                )
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{s.port}" for s in self.servers),
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_healthy()
        except BaseException:
            self.close()
            raise

    @property
    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:2])

    def url(self, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"redis+cluster://{self.seeds}/" + (f"?{query}" if query else "")

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.process is not None]

    def wait_healthy(self, limit: float = 30) -> None:
        """Until every live node sees all slots served and every replica in sync."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                if all(self._healthy(s) for s in self.alive()):
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become healthy")

    @staticmethod
    def _healthy(server: RedisServer) -> bool:
        client = server.client(decode_responses=True)
        info = client.execute_command("CLUSTER", "INFO")
        state = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
            return False
        replication = client.info("replication")
        return replication["role"] == "master" or replication.get("master_link_status") == "up"

    def node_of(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def owner_of(self, channel: str) -> RedisServer:
        """The master serving the slot of ``channel``."""
        client = self.alive()[0].client()
        slot = client.execute_command("CLUSTER", "KEYSLOT", channel)
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self.node_of(int(master[1]))
        raise LookupError(slot)

    def clients_named(self, prefix: str) -> list[tuple[RedisServer, dict[str, Any]]]:
        found = []
        for server in self.alive():
            for client in server.client(decode_responses=True).client_list():
                if client.get("name", "").startswith(prefix):
                    found.append((server, client))
        return found

    def close(self) -> None:
        for server in self.servers:
            server.close()
