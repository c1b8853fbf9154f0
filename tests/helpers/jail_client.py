#!/usr/bin/env python3
"""Clients that the tests run INSIDE the jail. Each prints one JSON line.

    jail_client.py connect HOST PORT
    jail_client.py resolve NAME
    jail_client.py srcaddr
    jail_client.py upload URL SIZE SEED
    jail_client.py halfclose HOST PORT SIZE SEED
    jail_client.py concurrent HOST PORT N
"""
import asyncio
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datagen  # noqa: E402


def out(obj, ok=True):
    print(json.dumps(obj), flush=True)
    sys.exit(0 if ok else 1)


def cmd_connect(host, port):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        s.close()
        out({"ok": True, "elapsed": time.monotonic() - t0})
    except OSError as e:
        out({"ok": False, "errno": e.errno, "error": str(e),
             "elapsed": time.monotonic() - t0}, ok=False)


def cmd_resolve(name):
    infos = socket.getaddrinfo(name, 80, socket.AF_UNSPEC, socket.SOCK_STREAM)
    out({"addresses": sorted({i[4][0] for i in infos})})


def cmd_srcaddr():
    res = {}
    for fam, dst in ((socket.AF_INET, "10.0.2.2"), (socket.AF_INET6, "fd00:6d77::2")):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.connect((dst, 9))  # UDP connect sends nothing
            res[dst] = s.getsockname()[0]
        except OSError as e:
            res[dst] = f"error: {e}"
        finally:
            s.close()
    out(res)


def cmd_upload(url, size, seed):
    import requests
    size, seed = int(size), int(seed)
    r = requests.post(url, data=datagen.chunks(size, seed), timeout=300)
    r.raise_for_status()
    out(r.json())


def cmd_halfclose(host, port, size, seed):
    size, seed = int(size), int(seed)
    s = socket.create_connection((host, int(port)), timeout=30)
    for c in datagen.chunks(size, seed):
        s.sendall(c)
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    out({"reply": buf.decode(errors="replace")})


async def _concurrent(host, port, n):
    connected = 0
    attempted = 0
    all_attempted = asyncio.Event()
    errors = []

    async def one(i):
        nonlocal connected, attempted
        writer = None
        try:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), 60)
                connected += 1
            finally:
                attempted += 1
                if attempted == n:
                    all_attempted.set()
            # hold every connection open until all of them are established
            await asyncio.wait_for(all_attempted.wait(), 120)
            payload = (f"conn-{i:05d}-" * 100).encode()
            writer.write(payload)
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(len(payload)), 60)
            if got != payload:
                raise ValueError("echo mismatch")
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 60)
            if rest:
                raise ValueError(f"unexpected {len(rest)} trailing bytes")
            return True
        except Exception as e:  # noqa: BLE001
            errors.append(f"{i}: {type(e).__name__}: {e}")
            return False
        finally:
            if writer is not None:
                writer.close()

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return connected, sum(results), errors


def cmd_concurrent(host, port, n):
    n = int(n)
    connected, ok, errors = asyncio.run(_concurrent(host, int(port), n))
    out({"n": n, "connected": connected, "ok": ok, "errors": errors[:20]},
        ok=(ok == n))


def main():
    cmds = {"connect": cmd_connect, "resolve": cmd_resolve, "srcaddr": cmd_srcaddr,
            "upload": cmd_upload, "halfclose": cmd_halfclose,
            "concurrent": cmd_concurrent}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
