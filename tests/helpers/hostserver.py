#!/usr/bin/env python3
"""Servers that the tests run on the HOST side (loopback only).

    hostserver.py --mode http|echo|halfclose [--bind 127.0.0.1] [--bind ::1] [--port 0]

Listens on every --bind address with the same port (the first bind picks it
when --port is 0), prints "PORT <n>" on stdout, then serves until killed.

http:
    GET  /hello                  -> 200 "hello from host <client-addr>\n"
    GET  /blob?size=N&seed=S     -> 200, N bytes of datagen.chunks(N, S)
    POST|PUT /sha256             -> 200 JSON {"sha256": hex, "bytes": n} of the
                                    request body (Content-Length or chunked)
echo:
    echoes every byte back; closes when the client half-closes.
halfclose:
    reads until EOF (client shut its write side), then writes
    "got <n> bytes sha256=<hex>\n" and closes.
"""
import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen  # noqa: E402

ALLOWED_BINDS = ("127.0.0.1", "::1")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshwrap-test/1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/hello":
            peer = self.client_address[0]
            self._reply(200, f"hello from host {peer}\n".encode())
        elif url.path == "/blob":
            q = parse_qs(url.query)
            size = int(q.get("size", ["0"])[0])
            seed = int(q.get("seed", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Connection", "close")
            self.end_headers()
            for c in datagen.chunks(size, seed):
                self.wfile.write(c)
            self.close_connection = True
        else:
            self._reply(404, b"not found\n")

    def _read_body(self, h):
        n = 0
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in chunk size")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers until empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    if not data:
                        raise ConnectionError("EOF in chunk")
                    h.update(data)
                    n += len(data)
                    left -= len(data)
                self.rfile.readline(3)  # CRLF after chunk
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    raise ConnectionError("EOF in body")
                h.update(data)
                n += len(data)
                left -= len(data)
        return n

    def do_POST(self):
        if urlparse(self.path).path != "/sha256":
            self._reply(404, b"not found\n")
            return
        h = hashlib.sha256()
        n = self._read_body(h)
        body = json.dumps({"sha256": h.hexdigest(), "bytes": n}).encode()
        self._reply(200, body, "application/json")

    do_PUT = do_POST


class HTTPServerV(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True


def serve_http(binds, port):
    import threading
    servers = []
    for bind in binds:
        cls = type("S", (HTTPServerV,), {
            "address_family": socket.AF_INET6 if ":" in bind else socket.AF_INET})
        srv = cls((bind, port), Handler)
        port = srv.server_address[1]
        servers.append(srv)
    print(f"PORT {port}", flush=True)
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[0].serve_forever()


async def _echo(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _halfclose(reader, writer):
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            h.update(data)
            n += len(data)
        writer.write(f"got {n} bytes sha256={h.hexdigest()}\n".encode())
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve_async(binds, port, handler):
    servers = []
    for bind in binds:
        srv = await asyncio.start_server(handler, bind, port, backlog=1024,
                                         reuse_address=True)
        port = srv.sockets[0].getsockname()[1]
        servers.append(srv)
    print(f"PORT {port}", flush=True)
    await asyncio.gather(*(srv.serve_forever() for srv in servers))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["http", "echo", "halfclose"], required=True)
    ap.add_argument("--bind", action="append")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    a.bind = a.bind or ["127.0.0.1"]
    for b in a.bind:
        if b not in ALLOWED_BINDS:
            sys.exit(f"refusing to bind {b}: tests only use host loopback")
    if a.mode == "http":
        serve_http(a.bind, a.port)
    else:
        handler = _echo if a.mode == "echo" else _halfclose
        asyncio.run(serve_async(a.bind, a.port, handler))


if __name__ == "__main__":
    main()
