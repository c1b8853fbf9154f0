#!/usr/bin/env bash
# meshwrap network benchmark: throughput and connection rate from inside a
# namespace to servers on the host's loopback, for plain loopback, meshwrap,
# slirp4netns and pasta.  See benches/README.md.
#
#   bash benches/run.sh                  # full run (~4 min), prints a markdown table
#   bash benches/run.sh --install        # first apt-get install the missing tools
#   bash benches/run.sh -r 1 -t 3        # quick run
#   bash benches/run.sh --help           # all options of benches/netbench.py
set -euo pipefail

src="${BASH_SOURCE[0]}"
if [[ "$src" == */* ]]; then here="${src%/*}"; else here=.; fi
here="$(cd "$here" && pwd)"

# tool -> Debian package
declare -A pkg=(
  [iperf3]=iperf3
  [wrk]=wrk
  [ab]=apache2-utils
  [slirp4netns]=slirp4netns
  [pasta]=passt
  [nginx]=nginx
  [nsenter]=util-linux
  [ip]=iproute2
)

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

missing=()
for t in iperf3 wrk slirp4netns pasta nginx nsenter ip; do
  have "$t" || missing+=("$t")
done

if [[ "${1:-}" == "--install" ]]; then
  shift
  if ((${#missing[@]})); then
    pkgs=()
    for t in "${missing[@]}"; do pkgs+=("${pkg[$t]}"); done
    echo "[run.sh] installing: ${pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
    missing=()
    for t in iperf3 wrk slirp4netns pasta nginx nsenter ip; do
      have "$t" || missing+=("$t")
    done
  fi
fi

if ((${#missing[@]})); then
  echo "[run.sh] missing: ${missing[*]} (their rows/columns will show n/a;" \
       "'bash benches/run.sh --install' installs them)" >&2
fi

py="$(command -v python3 || true)"
[[ -n "$py" ]] || py=/usr/bin/python3
exec "$py" "$here/netbench.py" "$@"
