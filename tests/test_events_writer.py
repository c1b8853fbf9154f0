"""The events file never holds up the jail (#35 item 6).

`--events fd:3` into a pipe whose reader has stopped (a paused log
shipper, a stalled `jq`): the pipe's buffer fills, and before the events
had a writer of their own, the next event blocked the data plane, so DNS
and every flow stopped until the reader went away. Now the lines go
through a bounded queue (`--events-queue`, small here), and what does not
fit is dropped and counted.

Network safety: names under .test, answered by meshwrap's mock.
"""
import json
import os
import subprocess

from conftest import PYTHON, jail_env

RULES = """
services:
  - name: stall
    match: { host: "*.stall.test" }
    http:
      routes:
        - when: { path: "/item/{n}" }
          respond: { json: { item: "{{ path.n }}", padding: "..........................................." } }
"""

# Fresh connections (a flow event and an HTTP event each), then a name
# never resolved before and a request to it: DNS and HTTP after the
# events pipe is long full.
SCRIPT = r"""
import json, socket, urllib.request
ok = 0
for i in range(400):
    with urllib.request.urlopen(f"http://api.stall.test/item/{i}", timeout=30) as r:
        ok += r.status == 200 and json.load(r)["item"] == str(i)
socket.getaddrinfo("late.stall.test", 80)
with urllib.request.urlopen("http://late.stall.test/item/last", timeout=30) as r:
    late = r.status
print(json.dumps({"ok": ok, "late": late}))
"""


def test_a_stalled_events_reader_does_not_hold_up_the_jail(jail):
    args, _ = jail.command([PYTHON, "-c", SCRIPT], rules=RULES, events=False,
                           opts=["--events", "fd:3", "--events-queue", "64K"])
    r, w = os.pipe()
    try:
        # The reader end stays open and is never read: writes block once
        # the pipe's 64 KiB are full, as with a reader that stopped.
        res = subprocess.run(["bash", "-c", f'exec "$@" 3>&{w}', "bash", *args], pass_fds=(w,),
                             capture_output=True, text=True, env=jail_env(),
                             stdin=subprocess.DEVNULL, timeout=300)
        os.close(w)
        w = None
        os.set_blocking(r, False)
        written = os.read(r, 1 << 20).decode(errors="replace")
    finally:
        if w is not None:
            os.close(w)
        os.close(r)
    where = f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr[-4000:]}"
    assert res.returncode == 0, where
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"ok": 400, "late": 200}, where
    # What did reach the pipe is whole JSON lines, from the start of the run.
    lines = written.split("\n")
    assert len(lines) > 10, written[:500]
    for line in lines[:-1]:
        assert json.loads(line)["kind"], line
    # The rest was dropped and counted, and the summary says so.
    note = [l for l in res.stderr.splitlines() if l.strip().startswith("events file:")]
    assert len(note) == 1, where
    dropped = int(note[0].split()[2])
    assert note[0].strip() == (f"events file: {dropped} events not written: its reader fell behind "
                               f"(they were dropped rather than waited for)"), where
    # 400 exchanges, 400 flows and the DNS answers did not fit in
    # 64 KiB of pipe and 64 KiB of queue.
    assert dropped > 400, where
