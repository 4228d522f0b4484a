#!/usr/bin/env bash
# Checks for what the build and the tests need (and, with the argument `bench`, what
# `make bench` compares against) and installs the missing Debian packages
# (as root, or through sudo when it needs no password); otherwise prints the command to
# run and exits 1.  Silent when everything is there.
set -euo pipefail

missing=()

need_cmd() { # need_cmd COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}

need_pkg() { # need_pkg PACKAGE
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ] ||
        missing+=("$1")
}

need_cmd gcc gcc
need_cmd make make
need_cmd nm binutils
need_cmd ar binutils
need_cmd setarch util-linux
need_cmd timeout coreutils
need_cmd telnet telnet
need_pkg netcat-openbsd     # the integration tests' nc (OpenBSD flavour)
need_pkg libcriterion-dev   # Criterion headers and library
need_pkg liburing-dev       # io_uring backend
need_pkg libhiredis-dev     # the server's Redis client (clustering)
need_cmd redis-server redis-server # the tests' Redis

if [ "${1:-}" = fuzz ]; then    # clang and its libFuzzer/sanitizer runtimes
    need_cmd clang clang
    if command -v clang >/dev/null 2>&1; then
        need_pkg "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
    fi
fi
if [ "${1:-}" = valgrind ]; then
    need_cmd valgrind valgrind
fi
if [ "${1:-}" = bench ]; then   # the servers make bench runs beside st_proactor
    need_cmd nats-server nats-server
    need_cmd ncat ncat
fi

# CC=clang needs clang and its sanitizer runtimes (make test builds ASan and TSan).
cc=${CC:-gcc}
case "$(basename "$cc")" in
clang*)
    if command -v "$cc" >/dev/null 2>&1; then
        major=$("$cc" -dumpversion | cut -d. -f1)
        need_pkg "libclang-rt-$major-dev"
    else
        missing+=(clang)
    fi
    ;;
esac

[ ${#missing[@]} -eq 0 ] && exit 0

# Each package once, in order.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
install="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n apt-get update -qq
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
else
    echo "deps: missing packages; as root, run:" >&2
    echo "    apt-get update && $install" >&2
    exit 1
fi
