"""RabbitMQ for the outage scenario: a TCP proxy that can cut the broker off, and a minimal AMQP
0-9-1 client that deletes a run's queues and exchanges afterwards (standard library only)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass


@dataclass
class AmqpUrl:
    host: str
    port: int
    user: str
    password: str
    vhost: str
    scheme: str

    @classmethod
    def parse(cls, url: str) -> "AmqpUrl":
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "amqp":
            raise ValueError(f"only amqp:// URLs can be proxied, not {parts.scheme}://")
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672,
                   urllib.parse.unquote(parts.username or "guest"),
                   urllib.parse.unquote(parts.password or "guest"), vhost, parts.scheme)

    def via(self, host: str, port: int) -> str:
        """This URL pointing at another host and port."""
        user = urllib.parse.quote(self.user, safe="")
        password = urllib.parse.quote(self.password, safe="")
        return f"amqp://{user}:{password}@{host}:{port}/{urllib.parse.quote(self.vhost, safe='')}"


class BrokerProxy:
    """Forwards 127.0.0.1:<port> to the broker. `cut()` closes every proxied connection and stops
    listening (new connections are refused) until `restore()` listens on the same port again.
    Runs its own asyncio loop on a thread."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0  # proxied connections opened
        self.cut_connections = 0  # connections open when the broker was cut off
        self.refused_while_down = 0
        self._server: asyncio.base_events.Server | None = None
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="broker-proxy")

    def start(self) -> int:
        self._thread.start()
        self._call(self._listen())
        return self.port

    def cut(self) -> int:
        """Cuts the broker off; returns how many live connections were closed."""
        return self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        cut = len(self._open)
        self.cut_connections += cut
        for client, upstream in list(self._open):
            client.transport.abort()
            upstream.transport.abort()
        self._open.clear()
        return cut

    async def _shutdown(self) -> None:
        await self._cut()
        # The aborted connections end their tasks on the loop's next turns.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before the cut
            self.refused_while_down += 1
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections += 1
        pair = (client_writer, upstream_writer)
        self._open.add(pair)
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer),
                                 self._pipe(upstream_reader, client_writer))
        finally:
            self._open.discard(pair)
            client_writer.transport.abort()
            upstream_writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


# --- a minimal AMQP 0-9-1 client, to delete what a run declared ----------------------------------

FRAME_METHOD, FRAME_END = 1, 0xCE


def _shortstr(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!B", len(data)) + data


def _longstr(value: bytes) -> bytes:
    return struct.pack("!I", len(value)) + value


class _Amqp:
    def __init__(self, url: AmqpUrl, timeout: float = 10):
        self.sock = socket.create_connection((url.host, url.port), timeout=timeout)
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self._expect(0, 10, 10)  # connection.start
        self._send(0, 10, 11, struct.pack("!I", 0)  # client-properties: an empty table
                   + _shortstr("PLAIN") + _longstr(f"\x00{url.user}\x00{url.password}".encode())
                   + _shortstr("en_US"))
        tune = self._expect(0, 10, 30)  # connection.tune
        channel_max, frame_max, _heartbeat = struct.unpack("!HIH", tune[:8])
        self._send(0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0))
        self._send(0, 10, 40, _shortstr(url.vhost) + _shortstr("") + b"\x00")  # connection.open
        self._expect(0, 10, 41)
        self._send(1, 20, 10, _shortstr(""))  # channel.open
        self._expect(1, 20, 11)

    def _send(self, channel: int, class_id: int, method_id: int, arguments: bytes) -> None:
        payload = struct.pack("!HH", class_id, method_id) + arguments
        self.sock.sendall(struct.pack("!BHI", FRAME_METHOD, channel, len(payload)) + payload + bytes([FRAME_END]))

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def _expect(self, channel: int, class_id: int, method_id: int) -> bytes:
        while True:
            kind, got_channel, size = struct.unpack("!BHI", self._read_exact(7))
            payload = self._read_exact(size)
            self._read_exact(1)
            if kind != FRAME_METHOD:
                continue  # heartbeats
            got = struct.unpack("!HH", payload[:4])
            if got in ((10, 50), (20, 40)):  # connection.close / channel.close
                code = struct.unpack("!H", payload[4:6])[0]
                text = payload[7:7 + payload[6]].decode(errors="replace")
                what = "connection" if got[0] == 10 else "channel"
                raise RuntimeError(f"the broker closed the {what}: {code} {text}")
            if got_channel == channel and got == (class_id, method_id):
                return payload[4:]

    def delete_queue(self, name: str) -> None:
        self._send(1, 50, 40, struct.pack("!H", 0) + _shortstr(name) + b"\x00")
        self._expect(1, 50, 41)

    def delete_exchange(self, name: str) -> None:
        self._send(1, 40, 20, struct.pack("!H", 0) + _shortstr(name) + b"\x00")
        self._expect(1, 40, 21)

    def close(self) -> None:
        try:
            self._send(0, 10, 50, struct.pack("!H", 200) + _shortstr("bye") + struct.pack("!HH", 0, 0))
            self._expect(0, 10, 51)
        finally:
            self.sock.close()


def delete_topology(url: AmqpUrl, queues: list[str], exchanges: list[str]) -> None:
    """Deletes the named queues and exchanges (absent ones are fine)."""
    client = _Amqp(url)
    try:
        for queue in queues:
            client.delete_queue(queue)
        for exchange in exchanges:
            client.delete_exchange(exchange)
    finally:
        client.close()
