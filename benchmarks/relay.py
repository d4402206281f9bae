"""A TCP relay that makes a loopback connection behave like a long, optionally rate-limited link.

This kernel has no netem, so bench_wan.py puts this relay between jsarchive and the servers. Each byte it reads is
written to the other side one-way delay (RTT / 2) later; with a rate, bytes also queue behind each other as on a
link of that speed. At most ``window`` bytes per direction may be unacknowledged, counted from when the relay reads
them until an acknowledgement would have come back (delivery + RTT / 2): a sender can therefore move at most
window / RTT, as a TCP connection whose window (the receiver's buffer, tcp_rmem) is that size.

What it is not: there is no slow start, no congestion control, no loss and no retransmission (the window is open
from the first byte, so short transfers look better than on a real WAN); the sockets on both sides of the relay add
some undelayed buffering; and its own CPU (Python, one thread per direction) is spent on the same cores as the
programs it measures. bench_wan.py reports that CPU beside every figure.

Usage: python benchmarks/relay.py --delay-ms 25 [--rate-mbit 1000] [--window-mib 8] --to 127.0.0.1:4222 [--to ...]
Prints one JSON line {"ports": [...]} (a listening port on 127.0.0.1 per --to, in order) once it accepts
connections; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import signal
import socket
import sys
import threading
import time

READ = 256 * 1024  # large reads keep the per-byte cost of a Python relay low


class Direction:
    """One direction of one connection: a reader that stamps when each piece may arrive, a writer that waits for it."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, rate: float, window: int) -> None:
        self.src, self.dst, self.delay, self.rate, self.window = src, dst, delay, rate, window
        self.cond = threading.Condition()
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.credits: collections.deque[tuple[float, int]] = collections.deque()  # (when the ack is back, bytes)
        self.held = 0
        self.link_free = 0.0  # when the (rate-limited) link has sent everything queued so far

    def _room(self) -> None:
        """Wait until fewer than ``window`` bytes are unacknowledged."""
        with self.cond:
            while True:
                now = time.monotonic()
                while self.credits and self.credits[0][0] <= now:
                    self.held -= self.credits.popleft()[1]
                if self.held < self.window:
                    return
                self.cond.wait(self.credits[0][0] - now if self.credits else None)

    def read(self) -> None:
        try:
            while True:
                self._room()
                data = self.src.recv(min(READ, self.window))
                now = time.monotonic()
                start = max(now, self.link_free)
                self.link_free = start + (len(data) / self.rate if self.rate else 0.0)
                with self.cond:
                    self.queue.append((self.link_free + self.delay, data))
                    self.held += len(data)
                    self.cond.notify_all()
                if not data:
                    return
        except OSError:
            with self.cond:
                self.queue.append((0.0, b""))
                self.cond.notify_all()

    def write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue:
                        self.cond.wait()
                    due, data = self.queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                self.dst.sendall(data)
                with self.cond:
                    self.credits.append((time.monotonic() + self.delay, len(data)))
                    self.cond.notify_all()
        except OSError:
            for s in (self.src, self.dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def serve(listener: socket.socket, target: tuple[str, int], delay: float, rate: float, window: int) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the relay does its own batching
        threads = []
        for src, dst in ((client, upstream), (upstream, client)):
            d = Direction(src, dst, delay, rate, window)
            threads += [threading.Thread(target=d.read, daemon=True), threading.Thread(target=d.write, daemon=True)]
        for t in threads:
            t.start()

        def close_when_done(ts: list[threading.Thread] = threads, socks: tuple = (client, upstream)) -> None:
            for t in ts:
                t.join()
            for s in socks:
                s.close()

        threading.Thread(target=close_when_done, daemon=True).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay (RTT / 2) in milliseconds")
    ap.add_argument("--rate-mbit", type=float, default=0, help="link rate in Mbit/s per direction (0: unlimited)")
    ap.add_argument("--window-mib", type=float, default=8, help="unacknowledged bytes per direction (MiB)")
    ap.add_argument("--to", action="append", required=True, help="HOST:PORT to relay to (repeatable)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ports = []
    for target in args.to:
        host, _, port = target.rpartition(":")
        listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        ports.append(listener.getsockname()[1])
        conf = (args.delay_ms / 1000, args.rate_mbit * 1e6 / 8, int(args.window_mib * 1024 * 1024))
        threading.Thread(target=serve, args=(listener, (host, int(port)), *conf), daemon=True).start()
    print(json.dumps({"ports": ports}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
