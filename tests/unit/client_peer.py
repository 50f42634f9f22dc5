#!/usr/bin/env python3
"""Scripted HTTP/1.1 upstream for tests/unit/test_client.c (standard library only).

  client_peer.py serve [CERT KEY]   listen on 127.0.0.1 port 0, print "PORT <n>", serve
  client_peer.py mkcerts DIR        CA + server certs (127.0.0.1, other.example) with openssl

The peer exits by itself after 300 s in case its parent forgets it.
"""
import hashlib
import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
STATS = {"conns": 0, "active": 0, "max_active": 0}
BODIES = {}


def body_of(size):
    with LOCK:
        b = BODIES.get(size)
    if b is None:
        pattern = bytes((i * 7 + 3) & 0xFF for i in range(251))
        b = (pattern * (size // 251 + 1))[:size]
        with LOCK:
            BODIES[size] = b
    return b


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            STATS["conns"] += 1
        self.die_next = False

    def reply(self, code, body, extra=None, length=True):
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("X-Client-Port", str(self.client_address[1]))
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def route(self):
        # A request body is read first, so that it never passes for the next request.
        n = int(self.headers.get("Content-Length") or 0)
        self.req_body = self.rfile.read(n) if n > 0 else b""
        if self.die_next:
            # A keep-alive connection that the server drops without answering.
            self.close_connection = True
            return
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        size = int(q.get("size", "1000"))
        p = url.path
        if p == "/cl":
            b = body_of(size)
            self.reply(200, b, {"X-Sha256": hashlib.sha256(b).hexdigest()})
        elif p == "/chunked":
            b = body_of(size)
            step = int(q.get("chunk", "1000"))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Sha256", hashlib.sha256(b).hexdigest())
            self.end_headers()
            for i in range(0, len(b), step):
                part = b[i:i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif p == "/close":
            b = body_of(size)
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("X-Sha256", hashlib.sha256(b).hexdigest())
            self.end_headers()
            self.wfile.write(b)
            self.close_connection = True
        elif p == "/redir":
            self.reply(int(q.get("code", "307")), b"redirecting", {"Location": q["to"]})
        elif p == "/echo-auth":
            self.reply(200, ("auth=" + self.headers.get("Authorization", "none")).encode())
        elif p == "/echo-body":
            head = "method=%s type=%s length=%s te=%s\n" % (
                self.command, self.headers.get("Content-Type", "none"),
                self.headers.get("Content-Length", "none"),
                self.headers.get("Transfer-Encoding", "none"))
            self.reply(200, head.encode() + self.req_body,
                       {"X-Sha256": hashlib.sha256(self.req_body).hexdigest()})
        elif p == "/method":
            self.reply(200, self.command.encode())
        elif p == "/echo-headers":
            self.reply(200, str(self.headers).encode())
        elif p == "/loop":
            self.reply(302, b"", {"Location": "/loop"})
        elif p == "/trunc":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 500)
            self.wfile.flush()
            self.close_connection = True
        elif p == "/stall":
            time.sleep(float(q.get("s", "3")))
            self.close_connection = True
        elif p == "/404":
            self.reply(404, b"not here")
        elif p == "/slow":
            with LOCK:
                STATS["active"] += 1
                STATS["max_active"] = max(STATS["max_active"], STATS["active"])
            time.sleep(int(q.get("ms", "100")) / 1000.0)
            with LOCK:
                STATS["active"] -= 1
            self.reply(200, b"ok")
        elif p == "/stats":
            with LOCK:
                s = "conns=%d max_active=%d" % (STATS["conns"], STATS["max_active"])
            self.reply(200, s.encode())
        elif p == "/reset":
            with LOCK:
                STATS["conns"] = 1 if q.get("keep") else 0
                STATS["max_active"] = 0
            self.reply(200, b"ok")
        elif p == "/die-next":
            self.die_next = True
            self.reply(200, b"ok")
        elif p == "/many-headers":
            self.send_response(200)
            for i in range(int(q.get("n", "100"))):
                self.send_header("X-H%d" % i, "v")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif p == "/interim":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.reply(200, b"after interim")
        else:
            self.reply(400, b"unknown path")


def serve(cert, key):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Timer(300, lambda: os._exit(3)).start()
    print("PORT %d" % httpd.server_address[1], flush=True)
    httpd.serve_forever()


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def mkcerts(d):
    ca, cak = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=regmirror test CA", "-keyout", cak, "-out", ca)
    for name, san in (("srv", "IP:127.0.0.1,DNS:localhost"), ("other", "DNS:other.example")):
        key, csr, pem = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".pem"))
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n" % san)
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj",
            "/CN=" + name, "-keyout", key, "-out", csr)
        run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cak,
            "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", pem)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve(sys.argv[2] if len(sys.argv) > 3 else None,
              sys.argv[3] if len(sys.argv) > 3 else None)
    elif len(sys.argv) == 3 and sys.argv[1] == "mkcerts":
        mkcerts(sys.argv[2])
    else:
        sys.exit("usage: client_peer.py serve [CERT KEY] | mkcerts DIR")
