"""Integration tests for meshwrap's TLS interception.

A service with `http:` whose `match.host` claims a name answers HTTPS to that
name too: meshwrap terminates TLS with a leaf certificate signed by its CA
(per run, or kept in `--ca-dir`), and the jail trusts that CA with no flag
(bundle bind mounts, a Java truststore, SSL_CERT_FILE & co.). TLS that no
rule claims is passed through untouched.

Every test runs real clients inside the jail (curl, Python requests and
httpx, Node's fetch, Java's HttpClient, openssl s_client, Python ssl). None
of them is given a CA by the test: the variables meshwrap sets are removed
from the environment first (see `no_inherited_trust_variables` in conftest), so the
jail gets them from meshwrap alone, as on a machine that never set them.

Network safety: names under .test only; the pass-through test's HTTPS server
listens on the host's 127.0.0.1.
"""
import hashlib
import json
import os
import select
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from cryptography import x509

import tls_certs  # tests/helpers, put on sys.path by conftest
from conftest import (CURL, HELPERS, PYTHON, SUT4, SUT6, TRUST_VARS, assert_flow_schema,
                      in_fake_range, jail_env)

RULES = Path(__file__).resolve().parent / "tls_rules"
MOCK = str(RULES / "mock.yaml")
PASS = str(RULES / "passthrough.yaml")

HOST = "api.tls.test"
URL = f"https://{HOST}/v1/hello"
EXPECTED = {"hello": "tls", "n": 7}
SECURE = "secure.local.test"

PROBE = str(HELPERS / "tls_probe.py")
UPSTREAM = str(HELPERS / "tls_upstream.py")
JAVA_MAIN = str(HELPERS / "Main.java")

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
JAVA_CACERTS = "/etc/ssl/certs/java/cacerts"


pytestmark = pytest.mark.usefixtures("no_inherited_trust_variables")


# --------------------------------------------------------------------------
# helpers


def ok(res, code=0):
    assert res.returncode == code, (
        f"expected exit code {code}, got {res.returncode}\n{res.describe()}")
    return res


def http_events(res, **match):
    return [e for e in res.events if e.get("kind") == "http"
            and all(e.get(k) == v for k, v in match.items())]


def notices(res):
    return [e for e in res.events if e.get("kind") == "notice"]


def tls_flows(res, host=HOST, n=None):
    flows = res.flows(host=host)
    if n is not None:
        assert len(flows) == n, f"expected {n} flow events for {host}, got {len(flows)}\n{res.describe()}"
    assert flows, f"no flow event for {host}\n{res.describe()}"
    for f in flows:
        assert_flow_schema(f)
        assert isinstance(f.get("tls"), dict), f"flow event without a `tls` object: {f}"
        assert set(f["tls"]) >= {"sni", "alpn", "version", "intercepted"}, f["tls"]
    return flows


def assert_mocked_tls(res, alpn, version="TLSv1.3", sni=HOST, n=1):
    """The mocked flows to api.tls.test: decrypted by meshwrap, no error."""
    flows = tls_flows(res, HOST, n)
    for f in flows:
        assert f["decision"] == "mock", f
        assert f["service"] == "tls-api", f
        assert f["error"] is None, f"mocked HTTPS flow has an error: {f}\n{res.describe()}"
        t = f["tls"]
        assert t["intercepted"] is True, f
        assert t["sni"] == sni, f
        assert t["version"] == version, f
        if alpn is not ...:
            assert t["alpn"] == alpn, f
        assert f["bytes_up"] > 0 and f["bytes_down"] > 0, f
        assert in_fake_range(f["dst"]), f
        assert f["src"] in (SUT4, SUT6), f
    return flows


def assert_hello_exchange(res, version, n=1):
    evs = http_events(res, service="tls-api", path="/v1/hello")
    assert len(evs) == n, f"expected {n} http events for /v1/hello\n{res.describe()}"
    for e in evs:
        assert e["status"] == 200 and e["answered_by"] == "route", e
        if version is not None:
            assert e["version"] == version, e
    return evs


def py(code, *args):
    return [PYTHON, "-c", code, *args]


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def showcerts(host=HOST, port=443):
    """An openssl s_client command that verifies against the default trust
    store (SSL_CERT_FILE) and prints the chain the server sent."""
    return (f"openssl s_client -connect {host}:{port} -servername {host} -showcerts "
            f"-verify_return_error </dev/null 2>&1")


def chain_from(text):
    """The certificates in openssl s_client output: leaf first."""
    certs = tls_certs.load_pems(text)
    assert len(certs) >= 2, f"expected the leaf and the CA in the chain, got {len(certs)}:\n{text[-3000:]}"
    return certs


def ca_of(chain):
    cas = [c for c in chain if tls_certs.describe(c)["is_ca"]]
    assert len(cas) == 1, f"expected one CA certificate in the chain, got {[tls_certs.describe(c) for c in chain]}"
    return cas[0]


# ==========================================================================
# clients: curl, requests, httpx, node, java get the mock over HTTPS


CURL_CASES = {
    # id: (extra curl args, ALPN, curl's %{http_version}, TLS version, http event version)
    "h2": ([], "h2", "2", "TLSv1.3", "HTTP/2.0"),
    "http1.1": (["--http1.1"], "http/1.1", "1.1", "TLSv1.3", "HTTP/1.1"),
    "tls1.2": (["--http1.1", "--tls-max", "1.2"], "http/1.1", "1.1", "TLSv1.2", "HTTP/1.1"),
    "ipv6": (["-6"], "h2", "2", "TLSv1.3", "HTTP/2.0"),
}


@pytest.mark.parametrize("case", list(CURL_CASES))
def test_curl_https_mock(jail, case):
    extra, alpn, curl_ver, tls_ver, http_ver = CURL_CASES[case]
    res = ok(jail.curl(*extra, "-w", "\n%{http_version} %{ssl_verify_result}", URL,
                       rules=MOCK))
    body, _, meta = res.stdout.rpartition("\n")
    assert json.loads(body) == EXPECTED, res.describe()
    assert meta == f"{curl_ver} 0", f"curl's http_version / ssl_verify_result: {meta!r}\n{res.describe()}"
    flows = assert_mocked_tls(res, alpn, tls_ver)
    if case == "ipv6":
        assert flows[0]["dst"].startswith("2001:2:"), flows[0]
        assert flows[0]["src"] == SUT6, flows[0]
    assert_hello_exchange(res, http_ver)
    assert not notices(res), f"unexpected notices\n{res.describe()}"


@pytest.mark.parametrize("http1", [False, True], ids=["h2", "http1.1"])
def test_curl_reuses_one_tls_connection_for_several_requests(jail, http1):
    extra = ["--http1.1"] if http1 else []
    res = ok(jail.curl(*extra, "-w", "\n", URL, f"https://{HOST}/v1/nope", URL, rules=MOCK))
    lines = res.stdout.splitlines()
    assert json.loads(lines[0]) == EXPECTED and json.loads(lines[2]) == EXPECTED, res.describe()
    assert json.loads(lines[1])["error"] == "no route matched", res.describe()
    assert_mocked_tls(res, "http/1.1" if http1 else "h2", n=1)
    flow_id = res.flows(host=HOST)[0]["flow_id"]
    evs = http_events(res, service="tls-api")
    assert [(e["path"], e["status"]) for e in evs] == [
        ("/v1/hello", 200), ("/v1/nope", 404), ("/v1/hello", 200)], res.describe()
    assert {e["flow_id"] for e in evs} == {flow_id}, evs


def test_python_requests_https_mock(jail):
    code = (
        "import json, requests\n"
        f"r = requests.get('{URL}', timeout=30)\n"
        f"p = requests.post('https://{HOST}/v1/charges', json={{'amount': 500, 'currency': 'usd'}}, timeout=30)\n"
        "print(json.dumps({'get': [r.status_code, r.headers.get('x-mock'), r.json()],"
        " 'post': [p.status_code, p.json()]}))\n")
    res = ok(jail.run(py(code), rules=MOCK))
    got = res.json_out()
    assert got["get"] == [200, "tls", EXPECTED], got
    assert got["post"][0] == 201, got
    assert got["post"][1]["id"] == "ch_1" and str(got["post"][1]["amount"]) == "500", got
    # urllib3 2 offers http/1.1 by ALPN
    assert_mocked_tls(res, "http/1.1", n=2)
    assert_hello_exchange(res, "HTTP/1.1")
    charge = http_events(res, service="tls-api", path="/v1/charges")
    assert len(charge) == 1 and charge[0]["status"] == 201, res.describe()


def test_httpx_https_mock_http1_and_http2(jail):
    pytest.importorskip("h2")
    code = (
        "import json, httpx\n"
        "out = []\n"
        "for h2 in (False, True):\n"
        "    with httpx.Client(http2=h2, timeout=30) as c:\n"
        f"        r = c.get('{URL}')\n"
        "        out.append([r.status_code, r.http_version, r.json()])\n"
        "print(json.dumps(out))\n")
    res = ok(jail.run(py(code), rules=MOCK))
    got = res.json_out()
    assert got == [[200, "HTTP/1.1", EXPECTED], [200, "HTTP/2", EXPECTED]], got
    flows = assert_mocked_tls(res, ..., n=2)
    assert sorted(f["tls"]["alpn"] for f in flows) == ["h2", "http/1.1"], flows
    evs = assert_hello_exchange(res, None, n=2)
    assert sorted(e["version"] for e in evs) == ["HTTP/1.1", "HTTP/2.0"], evs


def test_node_fetch_https_mock(jail):
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    js = ("fetch(process.argv[1]).then(async r => "
          "console.log(JSON.stringify([r.status, await r.json()])))"
          ".catch(e => { console.log('ERROR', e, e.cause); process.exit(1); })")
    res = ok(jail.run([node, "-e", js, URL], rules=MOCK))
    assert res.json_out() == [200, EXPECTED], res.describe()
    assert_mocked_tls(res, "http/1.1")
    assert_hello_exchange(res, "HTTP/1.1")


def test_java_httpclient_https_mock(jail):
    java = shutil.which("java")
    if not java:
        pytest.skip("java is not installed")
    res = ok(jail.run([java, JAVA_MAIN, URL], rules=MOCK, timeout=180))
    line = [l for l in res.stdout.splitlines() if l.strip()][-1]
    status, version, body = line.split(" ", 2)
    assert (status, version) == ("200", "HTTP_2"), res.describe()
    assert json.loads(body) == EXPECTED, res.describe()
    assert_mocked_tls(res, "h2")
    assert_hello_exchange(res, "HTTP/2.0")


# ==========================================================================
# routing inside TLS, SNI


def test_https_unknown_path_gets_404_json(jail):
    res = ok(jail.curl("-w", "\n%{http_code}", f"https://{HOST}/v1/nope?x=1", rules=MOCK))
    body, _, code = res.stdout.rpartition("\n")
    assert code == "404", res.describe()
    got = json.loads(body)
    assert got["error"] == "no route matched", got
    assert got["service"] == "tls-api", got
    assert got["request"].startswith("GET /v1/nope"), got
    assert set(got["routes"]) == {"hello", "charge"}, got  # route names
    assert_mocked_tls(res, "h2")
    evs = http_events(res, service="tls-api", path="/v1/nope")
    assert len(evs) == 1, res.describe()
    assert evs[0]["status"] == 404 and evs[0]["answered_by"] == "fallback", evs[0]


def test_client_without_sni_gets_certificate_for_resolved_name(jail):
    """No SNI: the certificate is made for the name the SUT resolved."""
    res = ok(jail.run([PYTHON, PROBE, HOST, "443", "--no-sni", "--get", "/v1/hello"],
                      rules=MOCK))
    got = res.json_out()
    assert got["ok"], got
    assert HOST in got["leaf"]["san"], got
    assert got["status_line"].startswith("HTTP/1.1 200"), got
    assert json.loads(got["body"]) == EXPECTED, got
    f = tls_flows(res, HOST, 1)[0]
    assert f["decision"] == "mock" and f["error"] is None, f
    assert f["tls"]["intercepted"] is True and f["tls"]["sni"] is None, f
    assert f["tls"]["version"] == "TLSv1.3", f


# ==========================================================================
# trust injection


def test_trust_is_injected_without_any_flag(jail, tmp_path):
    """The four variables point at a bundle holding the system CAs plus
    meshwrap's CA, the bundle is bind-mounted over the system path, the Java
    truststore is replaced, and the host's files are untouched."""
    host_bundle_sha = sha256_file(SYSTEM_BUNDLE)
    # CI installs Java (ca-certificates-java writes this truststore): the
    # Java part of the injection is checked unconditionally.
    assert os.path.exists(JAVA_CACERTS), f"no Java truststore at {JAVA_CACERTS}: is Java installed?"
    java_sha = sha256_file(JAVA_CACERTS)
    dump = (
        "import hashlib, json, os, sys\n"
        f"vars = {TRUST_VARS!r}\n"
        "def rd(p):\n"
        "    try:\n"
        "        return open(p).read()\n"
        "    except OSError as e:\n"
        "        return 'UNREADABLE ' + str(e)\n"
        "def sha(p):\n"
        "    try:\n"
        "        return hashlib.sha256(open(p, 'rb').read()).hexdigest()\n"
        "    except OSError:\n"
        "        return None\n"
        "print(json.dumps({'env': {v: os.environ.get(v) for v in vars},"
        " 'files': {v: rd(os.environ[v]) for v in vars if os.environ.get(v)},"
        f" 'bundle': rd('{SYSTEM_BUNDLE}'), 'java': sha('{JAVA_CACERTS}')}}))\n")
    res = ok(jail.run(["sh", "-c", f"{PYTHON} -c \"$0\" && {PYTHON} {PROBE} {HOST} 443",
                       dump], rules=MOCK))
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 2, res.describe()
    info, probe = json.loads(lines[0]), json.loads(lines[1])

    # the bind-mounted bundle: every host CA plus exactly one more, a CA
    host_fps = set(tls_certs.pem_fingerprints(open(SYSTEM_BUNDLE).read()))
    jail_ders = tls_certs.pem_ders(info["bundle"])
    assert host_fps <= {tls_certs.fingerprint(d) for d in jail_ders}, \
        "the jail's bundle lost some of the host's CAs"
    extra = [d for d in jail_ders if tls_certs.fingerprint(d) not in host_fps]
    assert len(extra) == 1, f"expected exactly one CA added to the bundle, got {len(extra)}"
    ca = tls_certs.describe(x509.load_der_x509_certificate(extra[0]))
    assert ca["is_ca"], ca

    for v in TRUST_VARS:
        assert info["env"][v], f"{v} is not set in the jail: {info['env']}"
        assert ca["sha256"] in tls_certs.pem_fingerprints(info["files"][v]), \
            f"{v}={info['env'][v]} does not hold meshwrap's CA"

    # the leaf a plain ssl.create_default_context() client sees verifies
    # and is issued by that CA for the name
    assert probe["ok"], probe
    assert probe["leaf"]["issuer_cn"] == ca["subject_cn"], (probe, ca)
    assert HOST in probe["leaf"]["san"], probe
    assert not probe["leaf"]["is_ca"], probe
    assert probe["version"] == "TLSv1.3", probe

    assert info["java"], f"{JAVA_CACERTS} is not readable in the jail"
    assert info["java"] != java_sha, \
        f"{JAVA_CACERTS} in the jail is the host's file: no Java truststore was injected"
    # nothing changed on the host
    assert sha256_file(SYSTEM_BUNDLE) == host_bundle_sha
    assert sha256_file(JAVA_CACERTS) == java_sha


def test_preset_trust_variables_are_kept(jail, tmp_path):
    """A variable already set is not replaced. Pointing at the system bundle
    path it still works (that file is the bind-mounted bundle + CA); pointing
    at the SUT's own bundle, meshwrap's CA is not trusted through it."""
    ca_key, ca_cert = tls_certs.make_ca("meshwrap-tests unrelated CA")
    own = tmp_path / "own-ca.pem"
    own.write_text(tls_certs.cert_pem(ca_cert))
    env = {"REQUESTS_CA_BUNDLE": SYSTEM_BUNDLE, "CURL_CA_BUNDLE": str(own)}
    code = (
        "import json, os, requests\n"
        f"vars = {TRUST_VARS!r}\n"
        f"r = requests.get('{URL}', timeout=30)\n"
        "print(json.dumps({'env': {v: os.environ.get(v) for v in vars}, 'get': [r.status_code, r.json()]}))\n")
    res = ok(jail.run(["sh", "-c",
                       f"{PYTHON} -c \"$0\"; {' '.join(CURL)} -o /dev/null https://{HOST}/v1/hello; "
                       "echo curl_exit=$?", code], rules=MOCK, env=env))
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    got = json.loads(lines[0])
    assert got["env"]["REQUESTS_CA_BUNDLE"] == SYSTEM_BUNDLE, got
    assert got["env"]["CURL_CA_BUNDLE"] == str(own), got
    assert got["env"]["SSL_CERT_FILE"] and got["env"]["NODE_EXTRA_CA_CERTS"], got
    assert got["get"] == [200, EXPECTED], got
    assert lines[-1] == "curl_exit=60", res.describe()


def test_no_ca_injection_makes_curl_fail_verification(jail):
    host_count = len(tls_certs.pem_ders(open(SYSTEM_BUNDLE).read()))
    script = (f"{' '.join(CURL)} {URL}; rc=$?; "
              + "".join(f"echo {v}=${{{v}-unset}}; " for v in TRUST_VARS)
              + f"echo certs=$(grep -c 'BEGIN CERTIFICATE' {SYSTEM_BUNDLE}); exit $rc")
    res = ok(jail.run(["sh", "-c", script], rules=MOCK, opts=["--no-ca-injection"]), 60)
    assert "SSL certificate problem" in res.stderr, res.describe()
    for v in TRUST_VARS:
        assert f"{v}=unset" in res.stdout.splitlines(), f"{v} set despite --no-ca-injection\n{res.describe()}"
    assert f"certs={host_count}" in res.stdout.splitlines(), \
        f"the system bundle was changed despite --no-ca-injection\n{res.describe()}"
    f = tls_flows(res, HOST, 1)[0]
    assert f["decision"] == "mock", f
    assert f["tls"]["intercepted"] is True and f["tls"]["sni"] == HOST, f
    assert f["error"] and "rejected the certificate" in f["error"], f
    assert HOST in f["error"], f
    ns = [n for n in notices(res) if "rejected the certificate" in n.get("message", "")]
    assert ns and ns[0]["flow_id"] == f["flow_id"], f"no notice about the rejected certificate\n{res.describe()}"
    assert not http_events(res), "no HTTP exchange can have happened"


# ==========================================================================
# the CA: per run, or persistent with --ca-dir / `meshwrap ca --export`


def run_ca_export(meshwrap_bin, dest, ca_dir=None, env=None):
    args = [meshwrap_bin, "ca", "--export", str(dest)]
    if ca_dir:
        args += ["--ca-dir", str(ca_dir)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=30, env=jail_env(env))
    assert p.returncode == 0, f"{args} exited {p.returncode}: {p.stderr}"
    certs = tls_certs.load_pems(Path(dest).read_text())
    assert len(certs) == 1, f"{dest} should hold one certificate"
    return certs[0]


def key_files(d):
    return [p for p in Path(d).iterdir() if p.is_file() and "PRIVATE KEY" in p.read_text(errors="replace")]


def assert_key_private(d):
    keys = key_files(d)
    assert keys, f"no private key file in {d}: {os.listdir(d)}"
    for k in keys:
        mode = stat.S_IMODE(k.stat().st_mode)
        assert mode == 0o600, f"{k} has mode {oct(mode)}, expected 0o600"


def test_ca_dir_reuses_the_same_ca_across_runs(jail, meshwrap_bin, tmp_path):
    d = tmp_path / "ca"
    r1 = ok(jail.run(["sh", "-c", showcerts()], rules=MOCK, opts=["--ca-dir", str(d)]))
    assert "Verify return code: 0 (ok)" in r1.stdout, r1.describe()
    ca1 = ca_of(chain_from(r1.stdout))
    assert d.is_dir(), "--ca-dir did not create the directory"
    assert_key_private(d)
    files_before = {p.name: sha256_file(p) for p in d.iterdir()}

    exported = tmp_path / "exported.pem"
    e1 = run_ca_export(meshwrap_bin, exported, d)
    assert tls_certs.fingerprint(e1) == tls_certs.fingerprint(ca1), \
        "`meshwrap ca --export` wrote another CA than the one run 1 used"

    # run 2: same CA in the chain, and the leaf verifies against the exported
    # certificate alone (so it is signed by the same key)
    r2 = ok(jail.run(["sh", "-c", f"{showcerts()}; {PYTHON} {PROBE} {HOST} 443 --cafile {exported}"],
                     rules=MOCK, opts=["--ca-dir", str(d)]))
    assert "Verify return code: 0 (ok)" in r2.stdout, r2.describe()
    ca2 = ca_of(chain_from(r2.stdout))
    assert tls_certs.fingerprint(ca2) == tls_certs.fingerprint(ca1), "run 2 used another CA"
    probe = r2.json_out()
    assert probe["ok"], f"the leaf of run 2 does not verify against the exported CA: {probe}"
    assert probe["leaf"]["issuer_cn"] == tls_certs.common_name(e1.subject), probe

    e2 = run_ca_export(meshwrap_bin, tmp_path / "exported2.pem", d)
    assert tls_certs.fingerprint(e2) == tls_certs.fingerprint(e1)
    assert {p.name: sha256_file(p) for p in d.iterdir()} == files_before, \
        "the CA directory changed on reuse"
    assert_key_private(d)
    assert_mocked_tls(r1, ..., n=1)
    assert_mocked_tls(r2, ..., n=2)


def test_ca_export_creates_the_default_ca_dir(meshwrap_bin, tmp_path):
    xdg = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(xdg)}
    e1 = run_ca_export(meshwrap_bin, tmp_path / "a.pem", env=env)
    default = xdg / "meshwrap" / "ca"
    assert default.is_dir(), f"no CA in $XDG_DATA_HOME/meshwrap/ca: {list(xdg.rglob('*'))}"
    assert_key_private(default)
    e2 = run_ca_export(meshwrap_bin, tmp_path / "b.pem", env=env)
    assert tls_certs.fingerprint(e1) == tls_certs.fingerprint(e2)
    assert tls_certs.describe(e1)["is_ca"]


def test_without_ca_dir_each_run_has_its_own_ca(jail, tmp_path):
    xdg = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(xdg)}
    fps = []
    for _ in range(2):
        r = ok(jail.run(["sh", "-c", showcerts()], rules=MOCK, env=env))
        assert "Verify return code: 0 (ok)" in r.stdout, r.describe()
        fps.append(tls_certs.fingerprint(ca_of(chain_from(r.stdout))))
    assert fps[0] != fps[1], "two runs without --ca-dir used the same CA"
    assert not xdg.exists(), f"a run without --ca-dir wrote {list(xdg.rglob('*'))}"


# ==========================================================================
# pass-through: TLS no rule claims is never decrypted


@pytest.fixture
def tls_upstream(tmp_path):
    """An HTTPS server on the host's 127.0.0.1 with a certificate for
    secure.local.test from a CA of the test's own."""
    ca_key, ca_cert = tls_certs.make_ca("meshwrap-tests upstream CA")
    key, cert = tls_certs.make_leaf(ca_key, ca_cert, [SECURE])
    ca_path = tmp_path / "upstream-ca.pem"
    cert_path, key_path = tmp_path / "upstream-cert.pem", tmp_path / "upstream-key.pem"
    ca_path.write_text(tls_certs.cert_pem(ca_cert))
    cert_path.write_text(tls_certs.cert_pem(cert))
    key_path.write_text(tls_certs.key_pem(key))
    token = uuid.uuid4().hex
    proc = subprocess.Popen([PYTHON, UPSTREAM, "--cert", str(cert_path), "--key", str(key_path),
                             "--token", token], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=jail_env(), start_new_session=True)
    try:
        r, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline().decode() if r else ""
        if not line.startswith("PORT "):
            proc.kill()
            raise RuntimeError(f"tls_upstream did not start: {line!r} {proc.stderr.read().decode()}")

        class Upstream:
            pass
        u = Upstream()
        u.port, u.token, u.ca_path = int(line.split()[1]), token, str(ca_path)
        u.cert = cert
        u.fingerprint = tls_certs.fingerprint(cert)
        u.ca_cn = tls_certs.common_name(ca_cert.subject)
        yield u
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_passthrough_tls_is_not_decrypted(jail, tls_upstream):
    u = tls_upstream
    # The clients trust the upstream's CA through variables the test sets;
    # meshwrap keeps them (it only sets what is unset).
    env = {"SSL_CERT_FILE": u.ca_path, "CURL_CA_BUNDLE": u.ca_path}
    mock_get = ("import json, requests; r = requests.get('%s', timeout=30);"
                " print(json.dumps([r.status_code, r.json()]))" % URL)
    script = " && ".join([
        f"{' '.join(CURL)} https://{SECURE}:{u.port}/from-curl",
        f"{' '.join(CURL)} --tls-max 1.2 https://{SECURE}:{u.port}/from-curl-tls12",
        f"{PYTHON} {PROBE} {SECURE} {u.port} --get /from-probe",
        f"{PYTHON} -c \"$0\"",
    ])
    res = ok(jail.run(["sh", "-c", script, mock_get], rules=[MOCK, PASS], unmatched="pass",
                      env=env))
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    assert len(lines) == 4, res.describe()
    # curl reached the test's server, which saw the original SNI
    assert lines[0] == f"hello from tls upstream {u.token} sni={SECURE} path=/from-curl", res.describe()
    assert lines[1] == f"hello from tls upstream {u.token} sni={SECURE} path=/from-curl-tls12", \
        res.describe()
    # the certificate the client saw is the upstream's own, not meshwrap's
    probe = json.loads(lines[2])
    assert probe["ok"], probe
    assert probe["leaf"]["sha256"] == u.fingerprint, (probe, u.fingerprint)
    assert probe["leaf"]["issuer_cn"] == u.ca_cn, probe
    assert probe["version"] == "TLSv1.3", probe
    assert probe["body"] == f"hello from tls upstream {u.token} sni={SECURE} path=/from-probe\n", probe
    # the claimed name in the same run is still mocked
    assert json.loads(lines[3]) == [200, EXPECTED], res.describe()

    # in connection order: curl (TLS 1.3), curl (TLS 1.2), the probe (TLS 1.3)
    passed = sorted(tls_flows(res, SECURE, 3), key=lambda f: f["flow_id"])
    for f in passed:
        assert f["decision"] == "pass", f
        assert f["error"] is None, f
        assert f["protocol"] == "tls", f
        assert f["upstream"] == f"127.0.0.1:{u.port}", f
        assert f["dst_port"] == u.port, f
        assert f["bytes_up"] > 0 and f["bytes_down"] > 0, f
        assert f["tls"]["intercepted"] is False, f
        assert f["tls"]["sni"] == SECURE, f
    # read from the upstream's ServerHello as it went by
    assert [f["tls"]["version"] for f in passed] == ["TLSv1.3", "TLSv1.2", "TLSv1.3"], \
        f"TLS versions of the passed flows: {[f['tls'] for f in passed]}"
    # under TLS 1.2 the ALPN answer is in the clear ServerHello: curl offers
    # h2 and http/1.1, the server picks http/1.1 (under TLS 1.3 it is
    # encrypted, so not checked)
    assert passed[1]["tls"]["alpn"] == "http/1.1", passed[1]
    assert_mocked_tls(res, "http/1.1")
    assert not http_events(res, host=SECURE), "a passed TLS flow produced HTTP events"
