#!/usr/bin/env bash
# The tools `make test` needs besides Go, make and git, on Debian:
#   gcc, libc6-dev   cgo (PKCS#11) and the PKCS#11 shim the HSM tests build
#   softhsm2, opensc a real PKCS#11 token (softhsm2-util, pkcs11-tool)
#   ruby             the Omnibus cookbook's tests (ruby, erb)
#   runit            chpst and svlogd, to run the rendered runit scripts
#   git              make lint lists the Go files with git
#   lintian          the .deb is checked as Debian checks packages
#   logrotate        the packaged logrotate file rotates a real node's audit log
#   postgresql       a real PostgreSQL server for the database engine's advisory
#                    test (initdb, postgres, psql)
#
# Installs the missing ones with apt-get (as root, or with sudo), or, when
# it cannot, stops with the one command to run.
#
#   scripts/test-deps.sh          install what is missing
#   scripts/test-deps.sh --check  install nothing: exit 0 if everything is
#                                 there, 1 (naming what is missing and the
#                                 command that installs it) if not
set -euo pipefail

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have gcc || missing+=(gcc)
[ -e /usr/include/dlfcn.h ] || missing+=(libc6-dev)
{ [ -e /usr/lib/softhsm/libsofthsm2.so ] && have softhsm2-util; } || missing+=(softhsm2)
have pkcs11-tool || missing+=(opensc)
{ have ruby && have erb; } || missing+=(ruby)
{ have chpst && have svlogd; } || missing+=(runit)
have git || missing+=(git)
have lintian || missing+=(lintian)
{ have logrotate || [ -x /usr/sbin/logrotate ]; } || missing+=(logrotate)
{ { have initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; } && have psql; } || missing+=(postgresql)

[ ${#missing[@]} -eq 0 ] && exit 0

install="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if $check; then
  echo "make test needs these Debian packages, which are missing: ${missing[*]}" >&2
  echo "Install them as root with: $install" >&2
  exit 1
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  # sudo without a password, or with one typed at a terminal.
  if have sudo && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
    sudo="sudo"
  else
    echo "make test needs these Debian packages, which are missing: ${missing[*]}" >&2
    echo "This user cannot install them (not root, no sudo). Run as root, then make test again:" >&2
    echo "  $install" >&2
    exit 1
  fi
fi

echo "Installing the test tools make test needs: ${missing[*]}" >&2
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
