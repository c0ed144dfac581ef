"""Network fault injection shared by the storage and stream tests: `from helpers_net import DroppingProxy`."""

from __future__ import annotations

import socket
import threading


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 that cuts the first response after `cut` bytes: a real dropped connection."""

    def __init__(self, target_port: int, cut: int) -> None:
        self.target_port, self.cut, self.drops = target_port, cut, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        drop = self.drops == 0
        threading.Thread(target=self._forward, args=(client, upstream, None), daemon=True).start()
        self._forward(upstream, client, self.cut if drop else None)

    def _forward(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    self.drops += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):  # shutdown, not just close: another thread may be blocked in recv on it
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
