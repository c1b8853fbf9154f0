#!/usr/bin/env python3
"""A TLS client that the TLS tests run INSIDE the jail. Prints one JSON line.

    tls_probe.py HOST PORT [--cafile F] [--no-sni] [--alpn h2,http/1.1]
                           [--get PATH] [--insecure]

Connects with Python's ssl module and reports what the server presented:
the negotiated version and ALPN, and the leaf certificate (SHA-256 of its
DER, subject, issuer, names). Without --cafile the trust store is
ssl.create_default_context()'s, which honours SSL_CERT_FILE. --no-sni sends
no server name (hostname checking off, chain still verified). --insecure
verifies nothing (to look at a certificate a client would reject). --get
sends `GET PATH` over HTTP/1.1 and reports the response.
Exit code 0 when the handshake (and the GET) worked, 1 otherwise.
"""
import argparse
import json
import os
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tls_certs  # noqa: E402
from cryptography import x509  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--cafile")
    ap.add_argument("--no-sni", action="store_true")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--alpn")
    ap.add_argument("--get")
    a = ap.parse_args()
    if a.cafile:
        ctx = ssl.create_default_context(cafile=a.cafile)
    else:
        ctx = ssl.create_default_context()
    if a.no_sni or a.insecure:
        ctx.check_hostname = False
    if a.insecure:
        ctx.verify_mode = ssl.CERT_NONE
    if a.alpn:
        ctx.set_alpn_protocols(a.alpn.split(","))
    out = {"ok": False}
    try:
        raw = socket.create_connection((a.host, a.port), timeout=20)
        s = ctx.wrap_socket(raw, server_hostname=None if a.no_sni else a.host)
        der = s.getpeercert(binary_form=True)
        out.update(version=s.version(), alpn=s.selected_alpn_protocol(),
                   leaf=tls_certs.describe(x509.load_der_x509_certificate(der)))
        if a.get:
            s.sendall(f"GET {a.get} HTTP/1.1\r\nHost: {a.host}\r\n"
                      f"Connection: close\r\n\r\n".encode())
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            head, _, body = buf.partition(b"\r\n\r\n")
            out["status_line"] = head.split(b"\r\n", 1)[0].decode(errors="replace")
            out["body"] = body.decode(errors="replace")
        s.close()
        out["ok"] = True
    except (OSError, ssl.SSLError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
