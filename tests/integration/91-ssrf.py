#!/usr/bin/env python3
"""No SSRF (issue 14): with allow_any_registry a client picks the upstream host, and the
mirror must not reach loopback, link-local (cloud metadata), private, multicast or
unspecified addresses for it, nor any IP literal, unless allow_upstream_networks names them.
Every way of picking a host is tried: ?ns=, a path prefix, a redirect Location and a token
realm. A configured registry is trusted as written (loopback here), but its redirects and
realms may not reach link-local addresses.

The whole test runs in a network namespace it creates, with only loopback up, and a mount
namespace whose /etc/hosts maps trap.test to 127.0.0.1: nothing here can reach the host's
network, and a trap listener on loopback shows that nothing connected.
"""

import ctypes
import json
import os
import socket
import subprocess

import rgmtest
import fakeup
from rgmtest import MANIFEST_ACCEPT, http

t = rgmtest.TAP(timeout=120)
links, routes_out = rgmtest.private_netns()          # first: before any thread or child
t.is_(routes_out.strip(), "", "private network namespace: no route out")

# /etc/hosts of our own: trap.test is loopback
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000
hosts_ok = False
if libc.unshare(CLONE_NEWNS) == 0:
    hosts_file = "/tmp/rgm-ssrf-hosts-%d" % os.getpid()
    with open(hosts_file, "w") as f:
        f.write("127.0.0.1 localhost trap.test\n::1 localhost6\n")
    hosts_ok = (subprocess.call(["mount", "--make-rprivate", "/"]) == 0 and
                subprocess.call(["mount", "--bind", hosts_file, "/etc/hosts"]) == 0)
    os.unlink(hosts_file)
t.ok(hosts_ok, "a mount namespace with our /etc/hosts (trap.test -> 127.0.0.1)")
t.is_(socket.gethostbyname("trap.test") if hosts_ok else None, "127.0.0.1",
      "trap.test resolves to 127.0.0.1 here")

ws = rgmtest.Workspace()


class Trap:
    """Listening sockets nobody should reach: a connection would wait in the backlog."""

    def __init__(self):
        self.s4 = socket.socket(socket.AF_INET)
        self.s4.bind(("127.0.0.1", 0))
        self.port = self.s4.getsockname()[1]
        self.s6 = socket.socket(socket.AF_INET6)
        self.s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.s6.bind(("::1", self.port))
        for s in (self.s4, self.s6):
            s.listen(16)
            s.setblocking(False)

    def connections(self):
        n = 0
        for s in (self.s4, self.s6):
            while True:
                try:
                    c, _ = s.accept()
                except BlockingIOError:
                    break
                c.close()
                n += 1
        return n


trap = Trap()
ca = rgmtest.make_ca(ws.path("ca"))
fake_cert = rgmtest.make_cert(ca, ws.path("fake"), names=("127.0.0.1",))

manifest = {"schemaVersion": 2, "mediaType": rgmtest.MT_OCI_MANIFEST,
            "config": {"mediaType": rgmtest.MT_OCI_CONFIG, "size": 0, "digest": ""},
            "layers": []}


def populate(up):
    cfg_blob = b'{"architecture":"amd64","os":"linux"}'
    d = up.add_blob(cfg_blob)
    layer = up.add_blob(os.urandom(5000))
    m = dict(manifest, config=dict(manifest["config"], size=len(cfg_blob), digest=d),
             layers=[{"mediaType": rgmtest.MT_OCI_LAYER, "size": 5000, "digest": layer}])
    up.add_manifest("library/app", "v1", m)
    return layer


cfg_up = fakeup.FakeUpstream(name="configured")          # a configured registry on loopback
layer = populate(cfg_up)
cdn = fakeup.FakeUpstream(name="cdn")                    # where it may redirect (loopback)
cdn.add_blob(cfg_up.blobs[layer])
cfg_up.behave("/blobs/" + layer, redirect=cdn)
meta_up = fakeup.FakeUpstream(name="to-metadata")        # redirects to cloud metadata
meta_layer = populate(meta_up)
meta_up.behave("/blobs/" + meta_layer, redirect="http://169.254.169.254")
realm_up = fakeup.FakeUpstream(name="realm-metadata",
                               auth=lambda h: 'Bearer realm="http://169.254.169.254/token",'
                                              'service="x"')
populate(realm_up)

m = rgmtest.Mirror(ws, name="mirror", config={
    "allow_any_registry": True, "default_registry": "cfg.test",
    "registries": {"cfg.test": {"endpoint": cfg_up.url},
                   "meta.test": {"endpoint": meta_up.url},
                   "realm.test": {"endpoint": realm_up.url}}})


def get(path):
    st, h, b = m.get(path, headers={"Accept": MANIFEST_ACCEPT})
    try:
        code = json.loads(b)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        code = None
    return st, code


P = trap.port
for ns in ("127.0.0.1:%d" % P, "[::1]:%d" % P, "10.0.0.1", "169.254.169.254",
           "localhost:%d" % P, "trap.test:%d" % P, "0.0.0.0:%d" % P, "224.0.0.1"):
    st, code = get("/v2/library/app/manifests/v1?ns=" + ns)
    t.ok(st == 403 and code == "DENIED", "ns=%s: 403 DENIED (%s %s)" % (ns, st, code))
for prefix in ("127.0.0.1:%d" % P, "169.254.169.254", "10.0.0.1", "trap.test:%d" % P):
    st, code = get("/v2/%s/library/app/manifests/v1" % prefix)
    t.ok(st == 403 and code == "DENIED", "path prefix %s: 403 DENIED (%s %s)"
         % (prefix, st, code))
t.is_(trap.connections(), 0, "the trap listener (127.0.0.1 and ::1) saw no connection")
log = m.log_text()
t.like(log, r"not connecting to 169\.254\.169\.254 \(link-local, an IP literal\)",
       "the refusal is logged with the address class")
t.like(log, r"not connecting to 127\.0\.0\.1 \(loopback\) for trap\.test",
       "a name that resolves to loopback is refused on its address")

# configured registries: trusted as written (loopback), redirects to loopback allowed
st, _ = get("/v2/library/app/manifests/v1")
t.is_(st, 200, "a configured registry on loopback: 200")
st, _, body = m.get("/v2/library/app/blobs/" + layer)
t.ok(st == 200 and fakeup.digest_of(body) == layer and cdn.count("GET", "/blobs/") == 1,
     "its redirect to another loopback server is followed")
st, code = get("/v2/meta.test/library/app/manifests/v1")
t.is_(st, 200, "meta.test manifest: 200")
st, _, _ = m.get("/v2/meta.test/library/app/blobs/" + meta_layer)
t.is_(st, 403, "a configured registry's redirect to 169.254.169.254: 403")
st, code = get("/v2/realm.test/library/app/manifests/v1")
t.ok(st == 403 and code == "DENIED", "a configured registry's token realm at "
     "169.254.169.254: 403 DENIED (%s %s)" % (st, code))

# allow_upstream_networks: an unconfigured host on 127.0.0.1 allowed, ::1 still refused
any_up = fakeup.FakeUpstream(tls=fake_cert, name="any")
any_layer = populate(any_up)
any_up.behave("/blobs/" + any_layer, redirect="http://[::1]:%d" % P)
m2 = rgmtest.Mirror(ws, name="mirror-allow", env={"SSL_CERT_FILE": ca.cert}, config={
    "allow_any_registry": True, "allow_upstream_networks": ["127.0.0.0/8"]})
st, _, _ = m2.get("/v2/library/app/manifests/v1?ns=127.0.0.1:%d" % any_up.port,
                  headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 200, "allow_upstream_networks 127.0.0.0/8: ns=127.0.0.1:PORT is fetched")
st, _, _ = m2.get("/v2/library/app/blobs/%s?ns=127.0.0.1:%d" % (any_layer, any_up.port))
t.is_(st, 403, "its redirect to [::1] (not allowed): 403")
st, _, _ = m2.get("/v2/library/app/manifests/v1?ns=[::1]:%d" % P,
                  headers={"Accept": MANIFEST_ACCEPT})
t.is_(st, 403, "ns=[::1]:PORT still refused")
t.is_(trap.connections(), 0, "the trap listener still saw no connection")

t.is_(m.stop(), 0, "mirror stopped cleanly")
t.is_(m2.stop(), 0, "second mirror stopped cleanly")
t.done()
