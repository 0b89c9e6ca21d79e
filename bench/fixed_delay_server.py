"""A minimal, fast loopback server for benchmarks: every request gets a fixed JSON answer after a fixed delay.

It is a raw asyncio ``Protocol`` (uvloop when installed) speaking just enough HTTP/1.1 keep-alive to serve
``POST /v2/callFlows``, so that it sustains well over 10,000 req/s on one core and is never the bottleneck
of what it measures. Run it as a subprocess; it prints ``PORT <n>`` on stdout once it listens::

    python bench/fixed_delay_server.py --delay-ms 50 [--port 0] [--body-file answer.json]

``--body-file`` serves that file's bytes instead of the callFlows body (``bench/batch.py --edge`` serves an
AEP Edge interact envelope).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

__all__ = ["BODY", "main"]

BODY = json.dumps(
    {
        "variant": "B",
        "decisionOffers": [
            {
                "ref": "6f1c2f0e-5d7a-4b8e-9c3a-2b1d0e9f8a71",
                "name": "Ten percent off",
                "attributes": {
                    "title": "10% off your order",
                    "text": "Today only, on everything in the shop.",
                    "imageUrl": "https://example.com/img/ten.png",
                    "ctaText": "Shop now",
                    "ctaUrl": "/sale",
                },
            }
        ],
    }
).encode()
_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Flowlab-Execution: bench\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
)
_RESPONSE = _HEAD + BODY


class _Http(asyncio.Protocol):
    """Answers each complete request (headers + Content-Length body) with ``_RESPONSE`` after the delay."""

    def __init__(self, delay: float, response: bytes = _RESPONSE) -> None:
        self.delay = delay
        self.response = response
        self.buffer = b""
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.response)


def _response(body: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
    return head + b"\r\n\r\n" + body


async def _serve(delay_ms: float, port: int, response: bytes = _RESPONSE) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Http(delay_ms / 1000, response), "127.0.0.1", port, backlog=4096
    )
    sys.stdout.write(f"PORT {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--body-file", default=None, help="serve this file's bytes as the JSON body")
    args = parser.parse_args()
    response = _response(open(args.body_file, "rb").read()) if args.body_file else _RESPONSE
    try:
        import uvloop

        uvloop.run(_serve(args.delay_ms, args.port, response))
    except ImportError:
        asyncio.run(_serve(args.delay_ms, args.port, response))


if __name__ == "__main__":
    main()
