"""A TCP proxy in front of a database server that loses one commit acknowledgement on purpose.

Workers connect through it. The first time a connection commits a transaction in which a job
claim ran, the proxy forwards the COMMIT, waits for the server to acknowledge it (so the
transaction is durable), swallows that acknowledgement and closes the connection: the client
sees a lost connection for a commit that happened, exactly what a server crash or a network
cut at the wrong instant produces. Where the claim is a statement of its own in autocommit
mode (PostgreSQL), the reply to the claim is its commit acknowledgement, and is swallowed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

#: The claim statement on every server dialect ("SET status = 'running', worker = ...").
CLAIM_MARKER = b"SET status = 'running', worker"
#: A simple-protocol COMMIT: PostgreSQL's Query message, MySQL's COM_QUERY.
COMMIT_MARKERS = (b"Q\x00\x00\x00\x0bCOMMIT\x00", b"\x03COMMIT")


class CommitAckDropper:
    """Listens on 127.0.0.1:<port> and relays to ``target``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int, autocommit_claim: bool) -> None:
        self.target = (target_host, target_port)
        self.autocommit_claim = autocommit_claim
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.armed = True
        self.dropped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closing = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            state = {"claimed": False, "swallow": False}
            threading.Thread(
                target=self._upstream, args=(client, server, state), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, state), daemon=True
            ).start()

    def _take_this_commit(self, state: dict[str, bool]) -> bool:
        with self._lock:
            if self.armed and state["claimed"]:
                self.armed = False
                return True
            return False

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict[str, bool]):
        """Client to server: spot the claim, then the COMMIT that follows it."""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if CLAIM_MARKER in data:
                    state["claimed"] = True
                if (self.autocommit_claim and state["claimed"]) or any(
                    m in data for m in COMMIT_MARKERS
                ):
                    if self._take_this_commit(state):
                        state["swallow"] = True
                    state["claimed"] = False
                server.sendall(data)
        _shut(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, state: dict[str, bool]):
        """Server to client: relay, except the acknowledgement of the chosen COMMIT."""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["swallow"]:
                    self.dropped.set()
                    break
                client.sendall(data)
        _shut(client, server)


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


@contextlib.contextmanager
def commit_ack_dropper(
    host: str, port: int, autocommit_claim: bool = False
) -> Iterator[CommitAckDropper]:
    proxy = CommitAckDropper(host, port, autocommit_claim)
    try:
        yield proxy
    finally:
        proxy.close()
