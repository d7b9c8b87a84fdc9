"""Throwaway servers for the fault tests: a test that kills, pauses or restarts a server
starts its own (free port, data under the test's tmp dir) and never touches the shared ones
that scripts/services.sh started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from adapters.redis.connection import connect_redis
from tests.services import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server:
    """A server process of our own: pause (SIGSTOP), resume, kill (SIGKILL) and start again
    on the same port. Stopped by its own PID only."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.dir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._up, timeout=60, what=f"private {self.name} on port {self.port}")

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"private {self.name} exited: see {self.dir}")
        return self.ready()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server must die too
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class PrivateRedis(_Server):
    """A redis-server. Without `persistent` it comes back empty after a kill; with it, every
    write is in its append-only file first (appendfsync always) and survives a SIGKILL."""

    name = "redis"

    def __init__(
        self, workdir: Path, *, persistent: bool = False, options: tuple[str, ...] = ()
    ) -> None:
        super().__init__(workdir)
        self.persistent = persistent
        self.options = options  # more redis-server arguments, e.g. a maxmemory policy

    def command(self) -> list[str]:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *aof,
            "--dir",
            str(self.dir),
            *self.options,
        ]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=5, socket_timeout=30)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False


class PrivateMariaDB(_Server):
    """A mariadbd with the binlog the listener needs, data under `workdir`."""

    name = "mariadb"

    def __init__(self, workdir: Path, *, server_id: int = 1, options: tuple[str, ...] = ()) -> None:
        super().__init__(workdir)
        self.server_id = server_id
        self.options = options  # more mariadbd arguments, e.g. --log-slave-updates
        self.data = self.dir / "data"
        install = shutil.which("mariadb-install-db") or "mariadb-install-db"
        user = os.environ.get("USER") or "root"
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--user={user}",
                "--auth-root-authentication-method=normal",
            ],
            check=True,
            capture_output=True,
        )

    def command(self) -> list[str]:
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        return [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.data}",
            f"--socket={self.dir / 'sock'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--user={os.environ.get('USER') or 'root'}",
            "--skip-name-resolve",
            f"--log-bin={self.data / 'binlog'}",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
            "--binlog-row-metadata=FULL",
            f"--server-id={self.server_id}",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            f"--log-error={self.dir / 'error.log'}",
            *self.options,
        ]

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run `statements` as root; the last one's rows."""
        conn = pymysql.connect(autocommit=True, connect_timeout=5, **self.params)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    @property
    def params(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "user": "root", "password": ""}

    @property
    def url(self) -> str:
        return f"mysql://root:@127.0.0.1:{self.port}/mysql"

    def ready(self) -> bool:
        try:
            pymysql.connect(connect_timeout=1, **self.params).close()
            return True
        except pymysql.err.OperationalError:
            time.sleep(0.05)
            return False


def gtid_replica(workdir: Path, server_id: int = 2) -> PrivateMariaDB:
    """A MariaDB to make a GTID replica of another (replicate()): its own binlog with the
    replicated transactions in it (a listener can stream from it once promoted), read-only."""
    return PrivateMariaDB(
        workdir, server_id=server_id, options=("--log-slave-updates", "--read-only")
    )


def replicate(primary: PrivateMariaDB, replica: PrivateMariaDB) -> None:
    """Make `replica` a GTID replica of `primary` from the primary's current position
    (DESIGN.md section 6), and wait until it runs."""
    ((position,),) = primary.sql("SELECT @@GLOBAL.gtid_binlog_pos")
    replica.sql(
        f"SET GLOBAL gtid_slave_pos = '{position}'",
        f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
        "MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, "
        "MASTER_CONNECT_RETRY=1",
        "START SLAVE",
    )
    wait_for(lambda: caught_up(primary, replica), timeout=30, what="the replica to catch up")


def caught_up(primary: PrivateMariaDB, replica: PrivateMariaDB) -> bool:
    """Whether `replica` has applied everything `primary` has in its binlog."""
    ((position,),) = primary.sql("SELECT @@GLOBAL.gtid_binlog_pos")
    ((reached,),) = replica.sql(f"SELECT MASTER_GTID_WAIT('{position}', 0)")
    return int(reached) == 0


def promote(replica: PrivateMariaDB) -> None:
    """Make a replica the primary: stop replicating, forget the old primary, accept writes."""
    replica.sql("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")


class PrivateRabbitMQ(_Server):
    """A RabbitMQ node of our own (node name, AMQP, distribution and epmd ports, data, Erlang
    cookie all under `workdir`), as scripts/services.sh starts one. `wipe()` between a kill
    and a start makes it come back empty."""

    name = "rabbitmq"
    BIN = Path("/usr/lib/rabbitmq/bin")

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.node = f"primer-cache-test-{self.port}@localhost"
        self.env = {
            **os.environ,
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(free_port()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        (self.dir / "pid").unlink(missing_ok=True)
        log = (self.dir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [str(self.BIN / "rabbitmq-server")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._up, timeout=90, what=f"private RabbitMQ on port {self.port}")

    def _beam(self) -> int | None:
        pid = self.dir / "pid"
        return int(pid.read_text().strip()) if pid.exists() and pid.read_text().strip() else None

    def ready(self) -> bool:
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1)
            return self._beam() is not None
        except Exception:
            time.sleep(0.1)
            return False

    def kill(self) -> None:
        beam = self._beam()
        if beam is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(beam, signal.SIGKILL)
        super().kill()

    def wipe(self) -> None:
        """Throw the node's data away (call while it is down): it comes back empty."""
        shutil.rmtree(self.dir / "mnesia", ignore_errors=True)

    def stop(self) -> None:
        self.kill()
        subprocess.run(
            ["epmd", "-port", self.env["ERL_EPMD_PORT"], "-kill"],
            capture_output=True,
            check=False,
        )


@contextmanager
def private_redis(workdir: Path, *options: str) -> Iterator[redis.Redis]:
    """A PrivateRedis for one block (redis-server `options` such as an eviction policy),
    stopped by its PID afterwards; yields a client of it."""
    server = PrivateRedis(workdir, options=options)
    server.start()
    client = server.client()
    try:
        yield client
    finally:
        client.close()
        server.stop()


class PrivateSentinel(_Server):
    """A Redis Sentinel (redis-server --sentinel) watching `primary` as service `service`, with
    short timeouts so a failover takes a few seconds: down after 1 s, failover timeout 5 s."""

    name = "sentinel"

    def __init__(
        self,
        workdir: Path,
        primary: PrivateRedis,
        service: str,
        quorum: int,
        down_after_ms: int = 1000,
    ) -> None:
        super().__init__(workdir)
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary.port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        self.service = service

    def command(self) -> list[str]:
        return ["redis-server", str(self.conf), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def ready(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


def following(url: str) -> redis.Redis:
    """The test's own client of the primary: retries across the failover (a pooled
    connection to the dead primary fails once; the sentinels may not know a primary for a
    moment) instead of failing the check that waits for the keys."""
    return connect_redis(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 30),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class ReplicationRelay:
    """A TCP relay between a replica and its primary that the test can freeze: bytes the
    primary sends then stay in the relay, never reach the replica (a replica lagging for
    real; a SIGSTOPped replica still gets them, in its socket buffer), and drop() discards
    them, as a primary that dies takes its unsent stream with it.

    With `only_replication`, clients pass through it too (a cluster node announcing the
    relay's port is reached through it by replicas and clients alike) and freeze() holds only
    the connections a replica opened: those whose first bytes upstream are the replica's
    handshake (REPLCONF, PSYNC)."""

    def __init__(self, upstream_port: int, *, only_replication: bool = False) -> None:
        self.upstream_port = upstream_port
        self.only_replication = only_replication
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.open = threading.Event()
        self.open.set()
        self.dropped = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.dropped.is_set():
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            self.sockets += [down, up]
            link = {"replication": not self.only_replication}
            threading.Thread(target=self._pump, args=(up, down, link, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, link, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, link: dict, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream and (b"REPLCONF" in data.upper() or b"PSYNC" in data.upper()):
                    link["replication"] = True
                while link["replication"] and not self.open.wait(0.05):
                    if self.dropped.is_set():
                        return
                if self.dropped.is_set():
                    return
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        self.open.clear()

    def drop(self) -> None:
        """Discard what is held and cut every connection (new ones are refused from now)."""
        self.dropped.set()
        for sock in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()


class SentinelGroup:
    """A primary, one replica of it (through a ReplicationRelay) and three sentinels
    (quorum 2), all our own: the cache Redis of a sidecar configured with `url`
    (redis+sentinel://)."""

    service = "primer-test"

    def __init__(self, workdir: Path, down_after_ms: int = 1000) -> None:
        self.down_after_ms = down_after_ms  # a primary silent this long is taken for dead
        self.primary = PrivateRedis(workdir / "primary")
        self.replica = PrivateRedis(workdir / "replica")
        self.sentinels: list[PrivateSentinel] = []
        self.workdir = workdir

    def start(self) -> None:
        self.primary.start()
        self.relay = ReplicationRelay(self.primary.port)
        self.replica.options = ("--replicaof", "127.0.0.1", str(self.relay.port))
        self.replica.start()
        wait_for(self._replica_linked, timeout=30, what="the replica to sync")
        for n in range(3):
            sentinel = PrivateSentinel(
                self.workdir / f"s{n}", self.primary, self.service, 2, self.down_after_ms
            )
            sentinel.start()
            self.sentinels.append(sentinel)
        wait_for(self._watching, timeout=30, what="the sentinels to see the replica and each other")

    def replica_caught_up(self) -> bool:
        """Whether the replica has processed everything the primary has sent it."""
        sent = int(self.primary.client().info("replication")["master_repl_offset"])
        got = int(self.replica.client().info("replication").get("slave_repl_offset", -1))
        return got >= sent

    def _replica_linked(self) -> bool:
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _watching(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(self.service)
            if int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def primary_port(self) -> int:
        host_port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.service)
        return int(host_port[1])

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()
        self.relay.drop()
