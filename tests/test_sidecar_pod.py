"""meshwrap as a Kubernetes-style sidecar, run as a real pod by `podman kube play`.

The pod has the init container (`meshwrap sidecar-init`, root with NET_ADMIN
only), the sidecar (`meshwrap sidecar`, uid 1337, every capability dropped)
and an app container (busybox httpd on port 8080). It sits on a sealed
`--internal` podman network this test creates, next to an upstream pod the
test also starts. From the app side (containers joined to the pod running
the host's own curl, redis-cli and python3 through `--rootfs /:O`), HTTP
and Redis calls are answered from the rules (a ConfigMap), an unmatched
name is refused and reported, a pass-out reaches the upstream pod (by a
`hosts:` entry, and by a name the network's DNS server knows, resolved by
the sidecar upstream), another pod reaches the
app's port, and the sidecar's /readyz and /metrics answer on its pod port.

The image is built from the repository's Dockerfile around the static
binary that .ci/run builds (musl, or glibc +crt-static as the fallback).
Skips with a message where podman or that binary is missing.

Network safety: every address is on the sealed network made here
(10.89.77.0/24, no gateway out) or a fake address inside the pod.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUBNET = "10.89.77"
POD_IP = f"{SUBNET}.20"
UPSTREAM_IP = f"{SUBNET}.10"
OTHER_IP = f"{SUBNET}.30"
IMAGE = "localhost/meshwrap:podtest"
BUSYBOX_IMAGE = "localhost/mw-busybox:podtest"
# The binaries .dockerignore lets into the build context.
STATIC_BINARIES = (
    "target/x86_64-unknown-linux-musl/dist/meshwrap",
    "target/x86_64-unknown-linux-gnu/dist/meshwrap",
)


def _static_binary():
    env = os.environ.get("MESHWRAP_IMAGE_BIN")
    if env:
        return Path(env)
    for rel in STATIC_BINARIES:
        p = REPO / rel
        if p.is_file():
            out = subprocess.run(["file", "-L", str(p)], capture_output=True, text=True).stdout
            if "static" in out:
                return p
    return None


def _busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(p).is_file():
            out = subprocess.run(["file", "-L", p], capture_output=True, text=True).stdout
            if "static" in out:
                return Path(p)
    return None


pytestmark = [
    pytest.mark.skipif(shutil.which("podman") is None,
                       reason="podman is not installed: the pod test needs podman, runc and catatonit (.ci/run installs them)"),
]


def run(cmd, check=True, timeout=120, **kw):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


RULES = textwrap.dedent("""\
    unmatched: refuse
    hosts:
      upstream.pay.test: %(upstream)s
    services:
      - name: payments
        match: { host: api.pay.test }
        http:
          routes:
            - name: health
              when: { method: GET, path: /health }
              respond: { json: { ok: true, from: sidecar } }
      - name: cache
        match: { host: cache.pay.test, port: 6379 }
        redis:
          seed:
            "feature:new_checkout": "on"
      # Names of the podman network's own DNS (aardvark, the kube-dns of
      # this test): passed out, resolved by the sidecar upstream.
      - name: network-dns
        match: { host: "*.dns.podman" }
        pass: {}
    """) % {"upstream": UPSTREAM_IP}


def pod_manifest(configmap):
    rules = textwrap.indent(RULES, " " * 4)
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {configmap}
        data:
          rules.yaml: |
        """) + rules + textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Pod
        metadata:
          name: mwpod
          labels: {{ app: mwpod }}
        spec:
          restartPolicy: Never
          initContainers:
            - name: meshwrap-init
              image: {IMAGE}
              imagePullPolicy: Never
              args: ["sidecar-init", "--tun=mw0", "--owner=1337"]
              securityContext:
                runAsUser: 0
                capabilities: {{ drop: [ALL], add: [NET_ADMIN] }}
              volumeMounts:
                - {{ name: dev-net-tun, mountPath: /dev/net/tun }}
          containers:
            - name: meshwrap
              image: {IMAGE}
              imagePullPolicy: Never
              args: ["sidecar", "--tun=mw0", "--rules=/etc/meshwrap/rules.yaml",
                     "--events=-", "--admin=0.0.0.0:9901", "--admin-read-only"]
              securityContext:
                runAsUser: 1337
                runAsGroup: 1337
                runAsNonRoot: true
                allowPrivilegeEscalation: false
                readOnlyRootFilesystem: true
                capabilities: {{ drop: [ALL] }}
              volumeMounts:
                - {{ name: dev-net-tun, mountPath: /dev/net/tun }}
                - {{ name: rules, mountPath: /etc/meshwrap, readOnly: true }}
            - name: app
              image: {BUSYBOX_IMAGE}
              imagePullPolicy: Never
              command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
              securityContext:
                runAsUser: 1000
                capabilities: {{ drop: [ALL] }}
          volumes:
            - name: dev-net-tun
              hostPath: {{ path: /dev/net/tun, type: CharDevice }}
            - name: rules
              configMap: {{ name: {configmap} }}
        """)


class Pod:
    """The played pod and the network around it, torn down by `close`."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.tag = uuid.uuid4().hex[:8]
        self.network = f"mwtest-{self.tag}"
        self.upstream = f"mwup-{self.tag}"
        self.manifest = tmp / "pod.yaml"
        self.cleanups = []

    def app(self, *cmd, check=True, timeout=60):
        """Runs a host tool as another container of the pod (the app side)."""
        # --rootfs takes the root directory, and what follows it is the
        # command: every option goes before it.
        return run(["podman", "run", "--rm", "--pod", "mwpod",
                    "--env", "PATH=/usr/local/bin:/usr/bin:/bin", "--rootfs", "/:O", *cmd],
                   check=check, timeout=timeout)

    def other_pod(self, *cmd, check=True, timeout=60):
        """Runs a host tool in a container on the network, outside the pod."""
        return run(["podman", "run", "--rm", "--network", self.network, "--ip", OTHER_IP,
                    "--rootfs", "/:O", *cmd], check=check, timeout=timeout)

    def close(self):
        for c in reversed(self.cleanups):
            subprocess.run(c, capture_output=True, timeout=120)


def _containers_conf(tmp):
    hard_nofile = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
    conf = tmp / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={hard_nofile}:{hard_nofile}", "nproc=4096:4096"]\n'
        "[engine]\n"
        'runtime = "runc"\n')
    return conf


@pytest.fixture(scope="module")
def pod():
    binary = _static_binary()
    if binary is None:
        pytest.skip("no static meshwrap binary: build one with "
                    "`cargo build --profile dist --target x86_64-unknown-linux-musl` (or see README) "
                    "or set MESHWRAP_IMAGE_BIN")
    busybox = _busybox()
    if busybox is None:
        pytest.skip("no static busybox (Debian package busybox-static) for the app container")
    tmp = Path(tempfile.mkdtemp(prefix="mwpod-"))
    os.chmod(tmp, 0o755)
    if "CONTAINERS_CONF" not in os.environ:
        os.environ["CONTAINERS_CONF"] = str(_containers_conf(tmp))
    p = Pod(tmp)
    try:
        # The image, from the repository's own Dockerfile and .dockerignore.
        rel = binary.resolve().relative_to(REPO)
        run(["podman", "build", "-q", "--layers=false", "-t", IMAGE, "--build-arg", f"BIN={rel}", "-f",
             str(REPO / "Dockerfile"), str(REPO)], timeout=300)
        p.cleanups.append(["podman", "rmi", "-f", IMAGE])
        bb = tmp / "busybox-ctx"
        bb.mkdir()
        shutil.copy(busybox, bb / "busybox")
        (bb / "Containerfile").write_text(textwrap.dedent("""\
            FROM scratch
            COPY busybox /bin/busybox
            RUN ["/bin/busybox", "mkdir", "-p", "/www"]
            RUN ["/bin/busybox", "sh", "-c", "echo app-inbound-ok > /www/index.html"]
            ENV PATH=/bin
            """))
        run(["podman", "build", "-q", "--layers=false", "-t", BUSYBOX_IMAGE, str(bb)], timeout=300)
        p.cleanups.append(["podman", "rmi", "-f", BUSYBOX_IMAGE])

        run(["podman", "network", "create", "--internal", "--subnet", f"{SUBNET}.0/24", p.network])
        p.cleanups.append(["podman", "network", "rm", "-f", p.network])

        # The upstream pod the pass-out reaches: a plain HTTP server.
        up_dir = tmp / "upstream"
        up_dir.mkdir()
        (up_dir / "index.html").write_text("upstream-pod-ok\n")
        run(["podman", "run", "-d", "--name", p.upstream, "--network", p.network, "--ip", UPSTREAM_IP,
             "-v", f"{up_dir}:/srv:ro", "--rootfs", "/:O",
             "python3", "-m", "http.server", "8080", "--bind", UPSTREAM_IP, "--directory", "/srv"])
        p.cleanups.append(["podman", "rm", "-f", "-t", "0", p.upstream])

        # The rules travel as a ConfigMap, as in deploy/; podman keeps it as
        # a volume of that name, which `kube down` leaves behind.
        configmap = f"meshwrap-rules-{p.tag}"
        p.manifest.write_text(pod_manifest(configmap))
        p.cleanups.append(["podman", "volume", "rm", "-f", configmap])
        p.cleanups.append(["podman", "kube", "down", str(p.manifest)])
        run(["podman", "kube", "play", "--network", p.network, "--ip", POD_IP, str(p.manifest)],
            timeout=300)
        # Ready when the sidecar's /readyz says so (asked like a kubelet
        # would: from outside the pod, at the pod's address).
        deadline = time.time() + 60
        while True:
            r = p.other_pod("curl", "-sS", "-m", "3", f"http://{POD_IP}:9901/readyz", check=False)
            if r.returncode == 0 and "ready" in r.stdout:
                break
            if time.time() > deadline:
                logs = run(["podman", "logs", "mwpod-meshwrap"], check=False)
                raise AssertionError(f"sidecar never ready: {r.stderr}\n{logs.stdout}\n{logs.stderr}")
            time.sleep(1)
        yield p
    finally:
        p.close()
        shutil.rmtree(tmp, ignore_errors=True)


def sidecar_events():
    out = run(["podman", "logs", "mwpod-meshwrap"], check=False).stdout
    events = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return events


def test_init_container_installed_the_routing(pod):
    r = pod.app("ip", "rule")
    assert "uidrange 1337-1337 lookup main" in r.stdout
    assert "uidrange 1337-1337 unreachable" in r.stdout
    assert f"from {POD_IP} lookup main" in r.stdout
    assert "lookup 100" in r.stdout
    route = pod.app("ip", "route", "get", "198.18.0.5").stdout
    assert "dev mw0" in route
    # The app side has no capability to change any of it.
    denied = pod.app("ip", "rule", "add", "pref", "50", "lookup", "main", check=False)
    assert denied.returncode != 0 and "Operation not permitted" in denied.stderr, denied


def test_http_call_is_answered_from_the_rules(pod):
    r = pod.app("curl", "-sS", "-m", "10", "http://api.pay.test/health")
    assert json.loads(r.stdout) == {"ok": True, "from": "sidecar"}


def test_python_requests_through_the_sidecar(pod):
    code = "import requests; r = requests.get('http://api.pay.test/health', timeout=10); print(r.status_code, r.json()['from'])"
    # The interpreter running the tests (it has requests); the app container
    # sees the host's whole file system.
    r = pod.app(sys.executable, "-c", code)
    assert r.stdout.split() == ["200", "sidecar"]


def test_redis_call_is_answered_from_the_rules(pod):
    r = pod.app("redis-cli", "-h", "cache.pay.test", "-p", "6379", "GET", "feature:new_checkout")
    assert r.stdout.strip() == "on"
    r = pod.app("redis-cli", "-h", "cache.pay.test", "SET", "k", "v")
    assert r.stdout.strip() == "OK"


def test_unmatched_destination_is_refused_and_reported(pod):
    r = pod.app("curl", "-sS", "-m", "10", "http://blocked.pay.test/", check=False)
    assert r.returncode == 7, r  # connection refused (reset by meshwrap)
    deadline = time.time() + 10
    while time.time() < deadline:
        refused = [e for e in sidecar_events()
                   if e.get("kind") == "flow" and e.get("host") == "blocked.pay.test"]
        if refused:
            break
        time.sleep(0.5)
    assert refused and refused[0]["decision"] == "refuse", sidecar_events()[-5:]
    flows = pod.other_pod("curl", "-sS", "-m", "5", f"http://{POD_IP}:9901/flows").stdout
    assert "blocked.pay.test" in flows


def test_pass_out_to_an_upstream_pod(pod):
    r = pod.app("curl", "-sS", "-m", "10", "http://upstream.pay.test:8080/")
    assert r.stdout.strip() == "upstream-pod-ok"
    passed = [e for e in sidecar_events()
              if e.get("kind") == "flow" and e.get("host") == "upstream.pay.test"]
    assert passed and passed[-1]["decision"] == "pass"


def test_names_no_mock_claims_are_resolved_upstream(pod):
    """The app's resolver (the network's DNS server, as kube-dns in a
    cluster) is answered by meshwrap; a name passed out is resolved by the
    sidecar with the pod's real resolver, through its uid's bypass."""
    resolv = pod.app("cat", "/etc/resolv.conf").stdout
    assert f"nameserver {SUBNET}.1" in resolv
    r = pod.app("curl", "-sS", "-m", "10", f"http://{pod.upstream}.dns.podman:8080/")
    assert r.stdout.strip() == "upstream-pod-ok"
    # The bare container name works too, through the search domain.
    r = pod.app("curl", "-sS", "-m", "10", f"http://{pod.upstream}:8080/")
    assert r.stdout.strip() == "upstream-pod-ok"
    flows = [e for e in sidecar_events() if e.get("kind") == "flow"
             and e.get("host") == f"{pod.upstream}.dns.podman"]
    assert flows and all(f["decision"] == "pass" for f in flows)
    assert all(f["service"] == "network-dns" for f in flows if "service" in f)


def test_inbound_request_from_another_pod_reaches_the_app(pod):
    r = pod.other_pod("curl", "-sS", "-m", "10", f"http://{POD_IP}:8080/")
    assert r.stdout.strip() == "app-inbound-ok"


def test_readyz_and_metrics_on_the_sidecar_port(pod):
    assert pod.other_pod("curl", "-sS", "-m", "5", f"http://{POD_IP}:9901/readyz").stdout.strip() == "ready"
    metrics = pod.other_pod("curl", "-sS", "-m", "5", f"http://{POD_IP}:9901/metrics").stdout
    assert "meshwrap_flows_total" in metrics
    assert 'decision="mock"' in metrics
    # Read-only on the pod port: a mutating call is refused.
    r = pod.other_pod("curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                      "-X", "POST", f"http://{POD_IP}:9901/reset")
    assert r.stdout == "403"


def test_sidecar_runs_with_no_capabilities(pod):
    pid = run(["podman", "inspect", "--format", "{{.State.Pid}}", "mwpod-meshwrap"]).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapPrm"].strip() == "0000000000000000"
    assert fields["Uid"].split()[0] == "1337"
