"""TCP ports of this machine's loopback, made reachable on a network namespace's loopback.

A KVM host in a test is a network namespace of its own; the engine and nfs-ganesha listen on
the machine's loopback only. `LoopbackForwarder` opens, inside the namespace, a listener on
127.0.0.1 for each given port and relays every connection to the same port on the machine's
loopback, so an agent, libvirtd and QEMU in the namespace reach them at their usual
addresses (127.0.0.1:agent port, 127.0.0.1:111/2049/20048) and the portmapper's answers stay
true. The listeners are made by a thread that enters the namespace (setns) only to create
them; relaying runs in the test process, in its own namespace.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import socket
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, "setns: %s" % os.strerror(error))


def listeners_in(namespace: str, ports: Iterable[int]) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1:port inside network namespace `namespace`."""
    made: list[socket.socket] = []
    failure: list[BaseException] = []

    def make() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open("/run/netns/%s" % namespace, os.O_RDONLY)
        try:
            _setns(target)
            try:
                for port in ports:
                    made.append(socket.create_server(("127.0.0.1", port), reuse_port=False))
            finally:
                _setns(home)
        except BaseException as exc:  # reported to the caller's thread
            failure.append(exc)
        finally:
            os.close(home)
            os.close(target)

    # A thread of its own: setns changes only the calling thread's namespace.
    thread = threading.Thread(target=make, name="netns-%s" % namespace)
    thread.start()
    thread.join()
    if failure:
        for sock in made:
            sock.close()
        raise failure[0]
    return made


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


class LoopbackForwarder:
    """Relays 127.0.0.1:port in a namespace to 127.0.0.1:port here, for each port."""

    def __init__(self, namespace: str, ports: Iterable[int]):
        self.namespace = namespace
        self.ports = list(ports)
        self._listeners: list[socket.socket] = []
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackForwarder:
        self._listeners = listeners_in(self.namespace, self.ports)
        self._thread = threading.Thread(target=self._accept, name="forward-%s" % self.namespace, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        selector = selectors.DefaultSelector()
        for listener in self._listeners:
            selector.register(listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _events in selector.select(timeout=0.2):
                try:
                    inner, _peer = key.fileobj.accept()
                except OSError:
                    continue
                port = key.fileobj.getsockname()[1]
                try:
                    outer = socket.create_connection(("127.0.0.1", port), timeout=10)
                except OSError as exc:
                    log.warning("cannot relay %s:%d: %s", self.namespace, port, exc)
                    inner.close()
                    continue
                outer.settimeout(None)
                with self._lock:
                    self._connections += [inner, outer]
                finished: list[socket.socket] = []
                for a, b in ((inner, outer), (outer, inner)):
                    threading.Thread(target=self._pump, args=(a, b, finished), daemon=True).start()
        selector.close()

    def _pump(self, source: socket.socket, sink: socket.socket, finished: list[socket.socket]) -> None:
        """Relay one direction; the second direction to end closes the connection's sockets, so
        a relay that makes a connection a second (an NFS client) holds no descriptors for long."""
        _pump(source, sink)
        with self._lock:
            finished.append(source)
            if len(finished) < 2:
                return
            for sock in (source, sink):
                if sock in self._connections:
                    self._connections.remove(sock)
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self._listeners:
            sock.close()
        with self._lock:
            for sock in self._connections:
                try:
                    sock.close()
                except OSError:
                    pass
            self._connections.clear()
