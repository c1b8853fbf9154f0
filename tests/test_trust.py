"""CA bundles that packages ship (certifi, botocore, grpcio's roots.pem, an
SDK's own file) trust meshwrap's CA inside the jail with no flag and no
edited file: meshwrap finds them in the working directory, the virtualenv
and the site-packages of the Pythons on PATH, and overlays each with its own
contents plus the CA (in the jail's mount namespace only). `--trust-path`
adds files it does not find; `meshwrap trust` lists them all.

Every client here drops the variables meshwrap sets (SSL_CERT_FILE,
REQUESTS_CA_BUNDLE, …) before it connects, so it verifies against the
package's own bundle, as on a machine where nobody set them.

Network safety: names under .test only, answered by meshwrap's mock.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PYTHON, TRUST_VARS, jail_env

RULES = """
services:
  - name: api
    match: { host: api.trust.test }
    http:
      routes:
        - when: { path: /hello }
          respond: { body: trusted }
"""

URL = "https://api.trust.test/hello"
UNSET = ["env"] + [a for v in TRUST_VARS for a in ("-u", v)]

# Connects with an ssl context that trusts exactly the file given.
WITH_CAFILE = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
try:
    print(urllib.request.urlopen(sys.argv[2], context=ctx, timeout=30).read().decode())
except Exception as e:
    print("FAILED", type(e).__name__, e)
"""


def certifi_bundle():
    import certifi
    return Path(certifi.where()).resolve()


pytestmark = pytest.mark.usefixtures("no_inherited_trust_variables")


def requests_get(jail, opts=(), env=None, python=PYTHON, cwd=None):
    code = ("import certifi, requests\n"
            "print('where', certifi.where())\n"
            f"try: print(requests.get('{URL}', timeout=30).text)\n"
            "except Exception as e: print('FAILED', type(e).__name__)\n")
    return jail.run(UNSET + [python, "-c", code], rules=RULES, opts=opts, env=env, cwd=cwd)


def test_certifi_of_the_python_on_path_is_trusted(jail):
    """requests verifies against certifi's cacert.pem when no variable
    points elsewhere: that file gets the CA too."""
    res = requests_get(jail)
    assert res.returncode == 0, res.describe()
    assert "trusted" in res.stdout.splitlines(), res.describe()
    without = requests_get(jail, opts=["--no-trust-discovery"])
    assert "FAILED SSLError" in without.stdout, without.describe()


def test_a_virtualenvs_own_certifi_is_trusted(jail, tmp_path):
    """A virtualenv with its own certifi (found through VIRTUAL_ENV), run
    from another directory."""
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    shutil.copytree(certifi_bundle().parent, site / "certifi")
    env = {"VIRTUAL_ENV": str(venv), "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    res = requests_get(jail, env=env, python=str(venv / "bin" / "python"), cwd=str(elsewhere))
    assert res.returncode == 0, res.describe()
    assert f"where {site}/certifi/cacert.pem" in res.stdout, res.describe()
    assert "trusted" in res.stdout.splitlines(), res.describe()


def test_a_grpc_style_bundle_in_the_working_directory_is_trusted(jail, tmp_path):
    """grpcio verifies against its own roots.pem; a project that vendors a
    package with one gets it overlaid from the working directory."""
    roots = tmp_path / "grpc" / "_cython" / "_credentials" / "roots.pem"
    roots.parent.mkdir(parents=True)
    shutil.copy(certifi_bundle(), roots)
    res = jail.run(UNSET + [PYTHON, jail.write("cafile.py", WITH_CAFILE), str(roots), URL],
                   rules=RULES, cwd=str(tmp_path))
    assert res.returncode == 0, res.describe()
    assert res.stdout.strip() == "trusted", res.describe()
    assert "BEGIN CERTIFICATE" in roots.read_text() and "meshwrap" not in roots.read_text(), \
        "the file on the host was changed"


def test_trust_path_overlays_a_bundle_by_glob(jail, tmp_path):
    """A bundle under a name meshwrap does not know is reached with
    --trust-path, a glob here; without it the client rejects the mock."""
    sdk = tmp_path / "vendor" / "paysdk" / "data" / "ca-roots.crt"
    sdk.parent.mkdir(parents=True)
    shutil.copy(certifi_bundle(), sdk)
    cmd = UNSET + [PYTHON, jail.write("cafile.py", WITH_CAFILE), str(sdk), URL]
    before = jail.run(cmd, rules=RULES, cwd=str(tmp_path))
    assert "FAILED" in before.stdout and "CERTIFICATE_VERIFY_FAILED" in before.stdout, before.describe()
    after = jail.run(cmd, rules=RULES, cwd=str(tmp_path),
                     opts=["--trust-path", f"{tmp_path}/vendor/*/data/*.crt"])
    assert after.stdout.strip() == "trusted", after.describe()


def test_trust_path_that_matches_nothing_is_an_error(jail, tmp_path):
    res = jail.run(["true"], opts=["--trust-path", f"{tmp_path}/nothing/*.pem"])
    assert res.returncode != 0, res.describe()
    assert f"--trust-path {tmp_path}/nothing/*.pem: matches no file" in res.stderr, res.describe()


def test_botocores_own_bundle_is_trusted(jail):
    """botocore's HTTP stack with its own cacert.pem (DEFAULT_CA_BUNDLE)."""
    pytest.importorskip("botocore")
    code = ("from botocore.httpsession import URLLib3Session, DEFAULT_CA_BUNDLE\n"
            "from botocore.awsrequest import AWSRequest\n"
            "print('bundle', DEFAULT_CA_BUNDLE)\n"
            f"r = URLLib3Session(verify=DEFAULT_CA_BUNDLE).send(AWSRequest('GET', '{URL}').prepare())\n"
            "print(r.status_code, r.text)\n")
    res = jail.run(UNSET + [PYTHON, "-c", code], rules=RULES)
    assert res.returncode == 0, res.describe()
    assert "200 trusted" in res.stdout, res.describe()


def test_meshwrap_trust_lists_what_a_run_overlays(meshwrap_bin, tmp_path):
    sdk = tmp_path / "vendor" / "sdk.crt"
    sdk.parent.mkdir()
    shutil.copy(certifi_bundle(), sdk)
    res = subprocess.run([meshwrap_bin, "trust", "--trust-path", str(sdk)], capture_output=True,
                         text=True, env=jail_env(), cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert f"{certifi_bundle()} (its own bundle + CA; found in " in res.stdout, res.stdout
    assert f"{sdk} (its own bundle + CA; found in --trust-path {sdk})" in res.stdout, res.stdout
    off = subprocess.run([meshwrap_bin, "trust", "--no-trust-discovery"], capture_output=True,
                         text=True, env=jail_env(), cwd=str(tmp_path))
    assert "its own bundle" not in off.stdout, off.stdout
