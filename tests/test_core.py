"""Core integration tests for meshwrap: the jail, pass-out, refuse, DNS,
events, exit codes and signals, rule-file validation, rootless operation.

Every test runs the real binary with real clients inside the jail and real
servers on host loopback. See conftest.py for the helpers.
"""
import ipaddress
import os
import re
import select
import shutil
import signal
import subprocess
import uuid

import pytest

import datagen  # tests/helpers, put on sys.path by conftest
from conftest import (CURL, DNS4, DNS6, GW4, GW6, GW_NAME, PYTHON, SUT4, SUT6,
                      FAKE_V4, FAKE_V6, Jail, assert_dns_schema, assert_flow_schema,
                      closed_port, find_pids_by_cmdline, in_fake_range,
                      jail_env, make_world_readable_copy, proc_children_state,
                      wait_for)

HOSTS_WEB = """\
hosts:
  web.local.test: 127.0.0.1
"""

MB = 1 << 20

# curl without -S: prints no error message of its own, so whatever names a
# destination on stderr comes from meshwrap's summary.
CURL_SILENT = ["curl", "-s", "--noproxy", "*", "--max-time", "60"]


def ok(res, code=0):
    assert res.returncode == code, (
        f"expected exit code {code}, got {res.returncode}\n{res.describe()}")
    return res


def only_flow(res, **match):
    flows = res.flows(**match)
    assert flows, f"no flow event matching {match}\n{res.describe()}"
    for f in flows:
        assert_flow_schema(f)
    return flows


# ==========================================================================
# 9, 10: exit codes, signals, missing command


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_propagates(jail, code):
    res = jail.run(["sh", "-c", f"exit {code}"], quiet=True)
    ok(res, code)


@pytest.mark.parametrize("sig,code", [(9, 137), (15, 143)])
def test_child_killed_by_signal_gives_128_plus_signal(jail, sig, code):
    res = jail.run(["sh", "-c", f"kill -{sig} $$"], quiet=True)
    ok(res, code)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                      (signal.SIGHUP, 129)])
def test_signal_to_meshwrap_is_forwarded(jail, sig, code):
    # A unique sleep argument lets us find the SUT's pid wherever it sits in
    # the process tree.
    token = f"{29 + (uuid.uuid4().int % 1000) / 1000:.3f}"
    args, _ = jail.command(["sh", "-c", f"echo ready; exec sleep {token}"], quiet=True)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=jail_env(), start_new_session=True)
    try:
        r, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline().decode() if r else ""
        assert line.strip() == "ready", (
            f"SUT did not start; stdout={line!r} stderr={proc.stderr.read1(4000)!r}"
            if proc.poll() is not None else f"SUT did not print ready: {line!r}")
        pids = wait_for(lambda: find_pids_by_cmdline(["sleep", token]), 5)
        assert pids, "could not find the SUT's sleep process"
        os.kill(proc.pid, sig)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"meshwrap did not exit within 15 s of {sig.name}")
        err = proc.stderr.read().decode(errors="replace")
        assert rc == code, f"{sig.name}: expected exit {code}, got {rc}; stderr:\n{err}"
        gone = wait_for(lambda: all(proc_children_state(p) in (None, "Z") for p in pids), 5)
        assert gone, f"SUT sleep (pids {pids}) still running after meshwrap exited"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in find_pids_by_cmdline(["sleep", token]):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("cmd", ["meshwrap-no-such-command-xyz",
                                 "/nonexistent/meshwrap-no-such-command-xyz"])
def test_missing_command_exits_127(jail, cmd):
    res = jail.run([cmd], quiet=True)
    ok(res, 127)
    assert "meshwrap-no-such-command-xyz" in res.stderr, (
        f"stderr does not name the missing command\n{res.describe()}")


def test_stdout_and_arguments_pass_through(jail):
    res = ok(jail.run(["printf", "%s|", "a b", "", "c'd"], quiet=True))
    assert res.stdout == "a b||c'd|"


# ==========================================================================
# the jail's addressing


def test_jail_addresses(jail):
    res = ok(jail.client("srcaddr", quiet=True))
    got = res.json_out()
    assert got[GW4] == SUT4, got
    assert got[GW6] == SUT6, got


def test_resolv_conf_points_at_virtual_resolver(jail):
    res = ok(jail.run(["cat", "/etc/resolv.conf"], quiet=True))
    servers = re.findall(r"^\s*nameserver\s+(\S+)", res.stdout, re.M)
    assert servers and servers[0] in (DNS4, DNS6), res.stdout
    assert set(servers) <= {DNS4, DNS6}, res.stdout


# ==========================================================================
# 1: pass-out to host loopback


def test_pass_via_gateway_name(jail, http_server):
    port = http_server.port
    res = ok(jail.curl(f"http://{GW_NAME}:{port}/hello"))
    assert res.stdout.startswith("hello from host "), res.describe()
    flows = only_flow(res, dst_port=port, decision="pass")
    f = flows[0]
    assert f["src"] in (SUT4, SUT6), f
    assert f["error"] is None, f
    assert f["protocol"] == "http1", f
    assert f["bytes_up"] > 0, f
    assert f["bytes_down"] >= len(res.stdout), f


@pytest.mark.parametrize("unmatched", [None, "refuse", "pass"])
def test_pass_via_gateway_ip(jail, http_server, unmatched):
    port = http_server.port
    res = ok(jail.curl("-4", f"http://{GW4}:{port}/hello", unmatched=unmatched))
    assert res.stdout == "hello from host 127.0.0.1\n", res.describe()
    f = only_flow(res, dst=GW4, dst_port=port)[0]
    assert f["decision"] == "pass", f


def test_pass_via_hosts_name(jail, http_server):
    port = http_server.port
    res = ok(jail.curl(f"http://web.local.test:{port}/hello", rules=HOSTS_WEB))
    assert res.stdout == "hello from host 127.0.0.1\n", res.describe()
    f = only_flow(res, host="web.local.test", dst_port=port)[0]
    assert f["decision"] == "pass", f
    assert f["protocol"] == "http1", f
    assert f["error"] is None, f
    assert in_fake_range(f["dst"]), f"SUT should have connected to a fake IP: {f}"


def test_pass_via_hosts_name_with_python_requests(jail, http_server):
    port = http_server.port
    code = ("import requests; r = requests.get('http://web.local.test:%d/hello', timeout=30);"
            " print(r.status_code, r.text.strip())" % port)
    res = ok(jail.run([PYTHON, "-c", code], rules=HOSTS_WEB))
    assert res.stdout.strip() == "200 hello from host 127.0.0.1", res.describe()


def test_two_rule_files_are_merged(jail, http_server):
    port = http_server.port
    a = "hosts:\n  one.local.test: 127.0.0.1\n"
    b = "hosts:\n  two.local.test: 127.0.0.1\n"
    res = ok(jail.run(["sh", "-c",
                       f"{' '.join(CURL)} http://one.local.test:{port}/hello && "
                       f"{' '.join(CURL)} http://two.local.test:{port}/hello"],
                      rules=[a, b]))
    assert res.stdout.count("hello from host") == 2, res.describe()


# ==========================================================================
# 7: IPv6


def test_ipv6_gateway_reaches_host_ipv6_loopback(jail, http_server):
    port = http_server.port
    res = ok(jail.curl("-6", f"http://[{GW6}]:{port}/hello"))
    assert res.stdout == "hello from host ::1\n", res.describe()
    f = only_flow(res, dst=GW6, dst_port=port)[0]
    assert f["src"] == SUT6, f
    assert f["decision"] == "pass", f


def test_ipv6_gateway_name(jail, http_server):
    port = http_server.port
    res = ok(jail.curl("-6", f"http://{GW_NAME}:{port}/hello"))
    assert res.stdout == "hello from host ::1\n", res.describe()


# ==========================================================================
# 2: refuse


def test_refuse_unknown_name(jail):
    res = jail.run([*CURL_SILENT, "-o", "/dev/null", "-w", "%{exitcode} %{http_code}\n",
                    "http://example.test/"])
    # curl's 7 is "could not connect" (the SYN was answered by a reset); a
    # connection left hanging would end in 28 (timeout) instead, and a
    # mocked or passed one in 0 with an HTTP status.
    ok(res, 7)
    assert res.stdout.strip().splitlines()[-1] == "7 000", res.describe()
    f = only_flow(res, host="example.test", decision="refuse")[0]
    assert f["dst_port"] == 80, f
    assert in_fake_range(f["dst"]), f
    assert f["bytes_up"] == 0 and f["bytes_down"] == 0, f
    # the exit summary names the refused destination and suggests a rule
    assert "example.test" in res.stderr, res.describe()
    assert re.search(r"^\s*(services|hosts|match|unmatched)\s*:", res.stderr, re.M), (
        f"no YAML snippet for the refused destination in the summary\n{res.describe()}")


@pytest.mark.parametrize("target", ["example.test", "198.18.200.200", "2001:2::ffff"])
def test_refuse_connect_is_immediate(jail, target):
    res = jail.client("connect", target, "80", quiet=True)
    got = res.json_out()
    # ECONNREFUSED is the kernel's answer to a RST for the SYN: the refusal
    # is immediate by construction. A dropped or unanswered SYN would end in
    # a timeout instead (no errno, or ETIMEDOUT), never in 111.
    assert got["ok"] is False and got["errno"] == 111, (
        f"expected ECONNREFUSED, got {got}\n{res.describe()}")
    assert "refused" in got["error"].lower(), got
    f = only_flow(res, dst_port=80, decision="refuse")[0]
    if target == "example.test":
        assert f["host"] == "example.test", f


def test_quiet_suppresses_summary(jail):
    res = jail.run([*CURL_SILENT, "http://example.test/"], quiet=True)
    ok(res, 7)
    assert "example.test" not in res.stderr, (
        f"--quiet still printed a summary\n{res.describe()}")


def test_summary_without_events_file(jail, http_server):
    res = ok(jail.curl(f"http://{GW4}:{http_server.port}/hello", events=False))
    assert str(http_server.port) in res.stderr, (
        f"exit summary does not list the passed flow\n{res.describe()}")


# ==========================================================================
# 3: closed upstream port -> ECONNREFUSED at connect time


@pytest.mark.parametrize("via,unmatched,rules", [
    ("gateway", "pass", None),
    ("gateway", None, None),
    ("hosts", "pass", HOSTS_WEB),
    ("hosts", None, "unmatched: pass\n" + HOSTS_WEB),
])
def test_closed_upstream_port_is_refused(jail, via, unmatched, rules):
    port = closed_port()
    host = GW4 if via == "gateway" else "web.local.test"
    res = jail.curl("-4", f"http://{host}:{port}/", unmatched=unmatched, rules=rules)
    ok(res, 7)
    f = only_flow(res, dst_port=port)[0]
    assert f["decision"] == "pass" and f["error"], (
        f"expected decision pass with an error for a closed upstream: {f}")


# ==========================================================================
# 4: 200 MB each way


def test_download_200mb(jail, http_server):
    size, seed = 200 * MB, 4242
    port = http_server.port
    script = (f"set -o pipefail; {' '.join(CURL)} -f --max-time 600 "
              f"'http://{GW4}:{port}/blob?size={size}&seed={seed}' | sha256sum")
    res = ok(jail.run(["bash", "-c", script], timeout=660))
    assert res.stdout.split()[0] == datagen.sha256_of(size, seed), res.describe()
    f = only_flow(res, dst_port=port)[0]
    assert f["bytes_down"] >= size, f


def test_upload_200mb(jail, http_server):
    size, seed = 200 * MB, 4243
    port = http_server.port
    res = ok(jail.client("upload", f"http://web.local.test:{port}/sha256", size, seed,
                         rules=HOSTS_WEB, timeout=660))
    got = res.json_out()
    assert got["bytes"] == size, got
    assert got["sha256"] == datagen.sha256_of(size, seed), got
    f = only_flow(res, host="web.local.test", dst_port=port)[0]
    assert f["bytes_up"] >= size, f


# ==========================================================================
# 5: 500 concurrent connections


def test_500_concurrent_connections(jail, echo_server):
    n = 500
    res = jail.client("concurrent", GW4, echo_server.port, n, timeout=300)
    got = res.json_out()
    assert got["connected"] == n and got["ok"] == n, f"{got}\n{res.describe()}"
    ok(res)
    flows = res.flows(dst_port=echo_server.port)
    assert len(flows) == n, f"expected {n} flow events, got {len(flows)}"
    assert all(f["decision"] == "pass" and f["error"] is None for f in flows), [
        f for f in flows if f["decision"] != "pass" or f["error"] is not None][:5]


# ==========================================================================
# 6: half-close


@pytest.mark.parametrize("size", [0, 10, 3 * MB])
def test_half_close(jail, halfclose_server, size):
    seed = 66
    res = ok(jail.client("halfclose", GW4, halfclose_server.port, size, seed))
    reply = res.json_out()["reply"]
    assert reply == f"got {size} bytes sha256={datagen.sha256_of(size, seed)}\n", res.describe()
    f = only_flow(res, dst_port=halfclose_server.port)[0]
    assert f["bytes_up"] == size, f
    assert f["bytes_down"] == len(reply), f


# ==========================================================================
# 8, 13: DNS


def test_getaddrinfo_of_hosts_name_gives_fake_ip_and_events(jail, http_server):
    port = http_server.port
    script = (f"getent ahostsv4 web.local.test; echo ---; "
              f"{' '.join(CURL)} -4 http://web.local.test:{port}/hello")
    res = ok(jail.run(["sh", "-c", script], rules=HOSTS_WEB))
    getent, body = res.stdout.split("---\n", 1)
    addrs = {l.split()[0] for l in getent.splitlines() if l.strip()}
    assert addrs, res.describe()
    assert all(ipaddress.ip_address(a) in FAKE_V4 for a in addrs), addrs
    assert body == "hello from host 127.0.0.1\n", res.describe()

    dns = res.dns(name="web.local.test", qtype="A")
    assert dns, f"no dns event for web.local.test A\n{res.describe()}"
    for d in dns:
        assert_dns_schema(d)
    assert any(set(d["answers"]) & addrs for d in dns), (dns, addrs)
    assert all(d["source"] == "hosts" for d in dns), dns

    f = only_flow(res, host="web.local.test", dst_port=port)[0]
    assert f["dst"] in addrs, (f, addrs)


def test_python_getaddrinfo_both_families(jail):
    res = ok(jail.client("resolve", "web.local.test", rules=HOSTS_WEB))
    addrs = res.json_out()["addresses"]
    v4 = [a for a in addrs if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addrs if ipaddress.ip_address(a).version == 6]
    assert v4 and all(ipaddress.ip_address(a) in FAKE_V4 for a in v4), addrs
    assert all(ipaddress.ip_address(a) in FAKE_V6 for a in v6), addrs


def test_refuse_mode_names_get_fake_ips(jail):
    res = ok(jail.run(["getent", "ahostsv4", "anything.example.test"]))
    addrs = {l.split()[0] for l in res.stdout.splitlines() if l.strip()}
    assert addrs and all(ipaddress.ip_address(a) in FAKE_V4 for a in addrs), res.describe()
    dns = res.dns(name="anything.example.test", qtype="A")
    assert dns and dns[0]["source"] == "fake", f"{dns}\n{res.describe()}"


def test_same_name_same_fake_ip_within_a_run(jail):
    res = ok(jail.run(["sh", "-c", "getent ahostsv4 a.stable.test | head -1; "
                                   "getent ahostsv4 b.stable.test | head -1; "
                                   "getent ahostsv4 a.stable.test | head -1"]))
    a1, b, a2 = [l.split()[0] for l in res.stdout.splitlines()]
    assert a1 == a2 and a1 != b, res.stdout


def test_gateway_name_resolves_to_gateway(jail):
    res = ok(jail.run(["getent", "ahosts", GW_NAME]))
    addrs = {l.split()[0] for l in res.stdout.splitlines() if l.strip()}
    assert GW4 in addrs, res.describe()
    assert addrs <= {GW4, GW6}, addrs


needs_dig = pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed")


@needs_dig
@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
@pytest.mark.parametrize("server", [DNS4, DNS6])
def test_dig_against_virtual_resolver(jail, transport, server):
    res = ok(jail.run(["dig", transport, "+short", "+time=3", "+tries=1", f"@{server}",
                       "web.local.test", "A"], rules=HOSTS_WEB))
    addrs = res.stdout.split()
    assert addrs and all(ipaddress.ip_address(a) in FAKE_V4 for a in addrs), res.describe()


@needs_dig
def test_dig_aaaa_gives_fake_ipv6(jail):
    res = ok(jail.run(["dig", "+tcp", "+short", "+time=3", "+tries=1", f"@{DNS4}",
                       "web.local.test", "AAAA"], rules=HOSTS_WEB))
    addrs = res.stdout.split()
    assert addrs and all(ipaddress.ip_address(a) in FAKE_V6 for a in addrs), res.describe()


# ==========================================================================
# 14: ICMP


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping not installed")
def test_ping_gateway(jail):
    res = jail.run(["ping", "-c1", "-W2", GW4])
    ok(res)
    assert "1 received" in res.stdout, res.describe()


# ==========================================================================
# 11: rootless


def _userns_works():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "unshare", "-Urn", "true"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed")
@pytest.mark.may_skip_in_ci("a kernel may disable unprivileged user namespaces, whatever is installed")
def test_rootless_pass_out(meshwrap_bin, world_dir, http_server):
    if not _userns_works():
        pytest.skip("unprivileged user namespaces are disabled on this machine")
    os.chmod("/dev/net/tun", 0o666)
    binary = make_world_readable_copy(meshwrap_bin, world_dir)
    jail = Jail(binary, world_dir)
    port = http_server.port
    script = (f"id -u; {' '.join(CURL)} http://{GW_NAME}:{port}/hello && "
              f"{' '.join(CURL)} -4 http://web.local.test:{port}/hello")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    res = ok(jail.run(["sh", "-c", script], rules=HOSTS_WEB, prefix=prefix,
                      env={"HOME": str(world_dir), "XDG_DATA_HOME": str(world_dir),
                           "XDG_CACHE_HOME": str(world_dir)}))
    lines = res.stdout.splitlines()
    assert lines[1].startswith("hello from host "), res.describe()
    assert lines[2] == "hello from host 127.0.0.1", res.describe()
    assert res.flows(host="web.local.test", decision="pass"), res.describe()


# ==========================================================================
# 12: rule files


def test_check_valid_files(jail):
    a = jail.write("good.yaml", "unmatched: pass\n" + HOSTS_WEB)
    b = jail.write("good6.yaml", "hosts:\n  v6.local.test: \"::1\"\n")
    c = jail.write("empty-hosts.yaml", "unmatched: refuse\nhosts: {}\n")
    res = subprocess.run([jail.binary, "check", a, b, c], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


BAD_RULES = [
    # (name, text, expected line, a word the message must contain)
    ("unknown-top-level", "unmatched: refuse\nunmatchd: pass\n", 2, "unmatchd"),
    ("unknown-top-level-typo", HOSTS_WEB + "hostss:\n  a.test: 127.0.0.1\n", 3, "hostss"),
    ("bad-unmatched-value", "hosts: {}\nunmatched: maybe\n", 2, "maybe"),
    ("hosts-not-a-map", "hosts:\n  - web.local.test\n", 2, "hosts"),
    ("yaml-syntax", "hosts:\n  web.local.test: [127.0.0.1\n", None, None),
]


@pytest.mark.parametrize("name,text,line,word", BAD_RULES, ids=[b[0] for b in BAD_RULES])
def test_check_reports_file_line_col(jail, name, text, line, word):
    path = jail.write(f"{name}.yaml", text)
    res = subprocess.run([jail.binary, "check", path], capture_output=True, text=True)
    assert res.returncode == 1, f"exit {res.returncode}; stderr:\n{res.stderr}"
    m = re.search(re.escape(path) + r":(\d+):(\d+):", res.stderr)
    assert m, f"no {path}:LINE:COL: in stderr:\n{res.stderr}"
    if line is not None:
        assert int(m.group(1)) == line, f"expected line {line}:\n{res.stderr}"
    assert int(m.group(2)) >= 1, res.stderr
    if word is not None:
        assert word in res.stderr, f"error does not name {word!r}:\n{res.stderr}"
    assert "panicked" not in res.stderr, res.stderr


def test_check_names_the_bad_file_among_several(jail):
    good = jail.write("good.yaml", HOSTS_WEB)
    bad = jail.write("bad.yaml", "unmatched: pass\nunknwon: 1\n")
    res = subprocess.run([jail.binary, "check", good, bad], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert re.search(re.escape(bad) + r":2:\d+:", res.stderr), res.stderr
    assert "unknwon" in res.stderr, res.stderr
    assert not re.search(re.escape(good) + r":\d+:\d+:", res.stderr), res.stderr


def test_run_with_bad_rules_fails_before_running(jail):
    bad = jail.write("bad.yaml", "hosts:\n  web.local.test: 127.0.0.1\nunknwon: 1\n")
    marker = jail.workdir / "sut-ran"
    res = jail.run(["touch", str(marker)], rules=bad)
    assert res.returncode != 0, res.describe()
    assert not marker.exists(), "the SUT ran although the rules file is invalid"
    assert re.search(re.escape(bad) + r":3:\d+:", res.stderr), res.describe()


def test_unknown_option_is_rejected(jail):
    res = subprocess.run([jail.binary, "--no-such-option", "--", "true"],
                         capture_output=True, text=True)
    assert res.returncode not in (0, 127), res
    assert "no-such-option" in res.stderr, res.stderr


def test_verbose_flag_runs(jail):
    """-v turns on info logging: the run logs what it set up for the jail
    (the trust it injected) at INFO on stderr, which a plain run keeps
    quiet about."""
    res = ok(jail.run(["true"], verbose=True))
    assert "panicked" not in res.stderr, res.describe()
    info = [l for l in res.stderr.splitlines() if re.search(r"\bINFO\b", l)]
    assert any("trust injected: " in l for l in info), (
        f"no INFO 'trust injected' line with -v\n{res.describe()}")
    plain = ok(jail.run(["true"]))
    assert not re.search(r"\bINFO\b", plain.stderr), (
        f"INFO lines without -v\n{plain.describe()}")
    assert "trust injected" not in plain.stderr, plain.describe()


def test_events_file_written_for_run_without_flows(jail):
    res = ok(jail.run(["true"]))
    assert os.path.exists(res.events_path), "--events file was not created"
    assert res.flows() == [], res.describe()


def test_flows_still_open_at_exit_get_an_event(jail):
    """A connection a background process still holds when the command
    exits is reported too, so the events and the summary list every
    destination the run reached."""
    rules = """
services:
  - name: held
    match: { host: held.open.test }
    http: { routes: [ { when: { path: / }, respond: { body: ok } } ] }
"""
    hold = ("import socket, time; s = socket.create_connection(('held.open.test', 80)); "
            "print('connected', flush=True); time.sleep(3)")
    res = jail.run(["sh", "-c", f'{PYTHON} -c "{hold}" & sleep 1'], rules=rules)
    assert res.returncode == 0, res.describe()
    assert "connected" in res.stdout, res.describe()
    flows = res.flows(host="held.open.test")
    assert len(flows) == 1, res.describe()
    assert flows[0]["decision"] == "mock"
    assert flows[0]["error"] == "still open when meshwrap stopped"
    assert "held.open.test:80" in res.stderr
