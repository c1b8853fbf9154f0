#!/usr/bin/env python3
"""An HTTPS server on host loopback for the pass-through TLS tests.

    tls_upstream.py --cert CERT.pem --key KEY.pem --token TOKEN

Binds 127.0.0.1 on a free port and prints `PORT n`. Every GET is answered
with one line: `hello from tls upstream TOKEN sni=NAME path=PATH`, where NAME
is the SNI this server received, so the test can tell that the bytes reached
this server untouched. ALPN: http/1.1 only. Stops on SIGTERM.
"""
import argparse
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        sni = getattr(self.request, "meshwrap_test_sni", None)
        body = (f"hello from tls upstream {self.server.token} "
                f"sni={sni} path={self.path}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *a):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, ctx, token):
        super().__init__(addr, Handler)
        self.ctx, self.token = ctx, token

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake happens in the handler's thread, on first read.
        return self.ctx.wrap_socket(sock, server_side=True,
                                    do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass  # a client that rejects our certificate is not our problem


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token", required=True)
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])

    def on_sni(sslobj, name, _ctx):
        try:
            sslobj.meshwrap_test_sni = name
        except AttributeError:
            pass

    ctx.sni_callback = on_sni
    srv = Server(("127.0.0.1", 0), ctx, a.token)
    print(f"PORT {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
