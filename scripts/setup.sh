#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian bookworm machine (root): Debian packages, the virtualenv with
# flexsfc and its Python dependencies, bpffs, and the compiled eBPF object. Fast when already done.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

APT_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 iperf3 nftables containernetworking-plugins linux-perf
  sockperf socat tcpdump ethtool python3-venv make)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: flexsfc needs root (network namespaces, eBPF); run with sudo" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python=$candidate
      break
    fi
  done
fi
[ -n "$python" ] || { echo "setup: Python >= 3.11 not found" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating virtualenv .venv with $python"
  "$python" -m venv .venv
fi
stamp=.venv/.flexsfc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python dependencies"
  log=$(mktemp)
  if ! { .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e ".[dev]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed (log above)" >&2
    exit 1
  fi
  rm -f "$log"
  touch "$stamp"
fi

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi

# The CNI plugin, where Multus and the local runtime look for it, next to Debian's IPAM plugins.
mkdir -p /opt/cni/bin
ln -sf "$here/.venv/bin/flexsfc-cni" /opt/cni/bin/flexsfc-cni
for plugin in static host-local; do
  [ -e "/opt/cni/bin/$plugin" ] || ln -sf "/usr/lib/cni/$plugin" "/opt/cni/bin/$plugin"
done

if [ -f flexsfc/dataplane/build.py ]; then
  .venv/bin/python -m flexsfc.dataplane.build
fi
