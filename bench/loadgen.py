"""A lean MQTT 3.1.1 QoS 1 publisher on a raw socket, for load: paho tops out near 10k msg/s here,
below what the bridge must be measured at. It keeps `window` messages unacknowledged, writes many
PUBLISH packets per send() and counts PUBACKs on a reader thread."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def publish_packet(topic: str, packet_id: int, payload: bytes) -> bytes:
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _remaining_length(len(body)) + body


class LeanPublisher:
    def __init__(self, port: int, client_id: str, window: int = 500) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _string(client_id)
        self._sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        if self._recv_exact(4)[:2] != b"\x20\x02":
            raise ConnectionError("no CONNACK")
        self._window = threading.Semaphore(window)
        self.acked = 0
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                complete = len(buffer) // 4  # PUBACK is always 4 bytes: 40 02 id id
                self.acked += complete
                for _ in range(complete):
                    self._window.release()
                buffer = buffer[complete * 4 :]
        except OSError:
            return

    def publish_all(
        self, topic: str, payloads: Sequence[bytes], rate_hz: float | None = None, batch: int = 50
    ) -> float:
        """Publish every payload (QoS 1), as fast as the window allows or at `rate_hz`; returns the
        monotonic time of the first send. Does not wait for the last acknowledgements."""
        started = time.monotonic()
        packet_id = 0
        for start in range(0, len(payloads), batch):
            chunk = payloads[start : start + batch]
            packets = []
            for payload in chunk:
                self._window.acquire()
                packet_id = packet_id % 65535 + 1
                packets.append(publish_packet(topic, packet_id, payload))
            if rate_hz:
                due = started + start / rate_hz
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self._sock.sendall(b"".join(packets))
        return started

    def publish_paced(
        self, topic: str, count: int, rate_hz: float, payload: Callable[[int, int], bytes]
    ) -> None:
        """Publish `count` messages one by one at `rate_hz`; `payload(i, now_ns)` builds each at its
        send time, so it can carry its own publish timestamp."""
        started = time.monotonic()
        for i in range(count):
            delay = started + i / rate_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._window.acquire()
            self._sock.sendall(publish_packet(topic, i % 65535 + 1, payload(i, time.time_ns())))

    def wait_acked(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.acked < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.acked} of {count} acknowledged")
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self._sock.sendall(b"\xe0\x00")
        finally:
            self._sock.close()
