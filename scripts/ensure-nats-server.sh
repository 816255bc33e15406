#!/usr/bin/env bash
# Makes sure the external tools Strata's tests and benchmarks use are installed: nats-server
# (looked up as $STRATA_NATS_SERVER, /usr/sbin/nats-server, then on PATH), with
# --with-promtool Prometheus' promtool, and with --with-nbd-tools the NBD clients the tests of
# `strata nbd` run (qemu-io and qemu-img of qemu-utils, nbdinfo and nbdcopy of libnbd-bin).
# Installs them with apt-get when run as root; otherwise prints how to install them and exits 1.
# Prints nothing when everything is present.
set -euo pipefail

usage() {
  echo "usage: bash scripts/ensure-nats-server.sh [--with-promtool] [--with-nbd-tools]"
}

with_promtool=0
with_nbd_tools=0
for arg in "$@"; do
  case "$arg" in
    --with-promtool) with_promtool=1 ;;
    --with-nbd-tools) with_nbd_tools=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "ensure-nats-server.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

# An explicit STRATA_NATS_SERVER wins over everything else, so it must point at a binary.
if [[ -n "${STRATA_NATS_SERVER:-}" ]]; then
  if [[ ! -x "$STRATA_NATS_SERVER" ]] && ! command -v "$STRATA_NATS_SERVER" >/dev/null 2>&1; then
    echo "ensure-nats-server.sh: STRATA_NATS_SERVER=$STRATA_NATS_SERVER is not an executable; fix it or unset it" >&2
    exit 1
  fi
fi

have_nats_server() {
  [[ -n "${STRATA_NATS_SERVER:-}" ]] || [[ -x /usr/sbin/nats-server ]] || command -v nats-server >/dev/null 2>&1
}

have_promtool() {
  command -v promtool >/dev/null 2>&1
}

have_qemu_utils() {
  command -v qemu-io >/dev/null 2>&1 && command -v qemu-img >/dev/null 2>&1
}

have_libnbd_bin() {
  command -v nbdinfo >/dev/null 2>&1 && command -v nbdcopy >/dev/null 2>&1
}

packages=()
have_nats_server || packages+=(nats-server)
if [[ $with_promtool -eq 1 ]] && ! have_promtool; then packages+=(prometheus); fi
if [[ $with_nbd_tools -eq 1 ]] && ! have_qemu_utils; then packages+=(qemu-utils); fi
if [[ $with_nbd_tools -eq 1 ]] && ! have_libnbd_bin; then packages+=(libnbd-bin); fi
[[ ${#packages[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "Strata needs: ${packages[*]}" >&2
  if command -v apt-get >/dev/null 2>&1; then
    echo "Install with: sudo apt-get install -y ${packages[*]}" >&2
    echo "(or set STRATA_NATS_SERVER to a nats-server binary that is not on PATH)" >&2
  else
    echo "No apt-get here: install nats-server (and promtool, from Prometheus; qemu-io, qemu-img," >&2
    echo "nbdinfo and nbdcopy, from qemu and libnbd) with this system's package manager, and set" >&2
    echo "STRATA_NATS_SERVER to the nats-server binary if it is not on PATH." >&2
  fi
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-nats-server.sh: ${packages[*]} missing and apt-get not available; install them by hand" >&2
  exit 1
fi

echo "ensure-nats-server.sh: installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if ! have_nats_server; then
  echo "ensure-nats-server.sh: nats-server still not found after installing it" >&2
  exit 1
fi
if [[ $with_promtool -eq 1 ]] && ! have_promtool; then
  echo "ensure-nats-server.sh: promtool still not found after installing prometheus" >&2
  exit 1
fi
if [[ $with_nbd_tools -eq 1 ]] && ! { have_qemu_utils && have_libnbd_bin; }; then
  echo "ensure-nats-server.sh: qemu-io, qemu-img, nbdinfo or nbdcopy still not found after installing qemu-utils and libnbd-bin" >&2
  exit 1
fi
