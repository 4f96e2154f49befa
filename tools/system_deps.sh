#!/usr/bin/env bash
# Installs the Debian packages the tests drive, when their program is missing (make system-deps).
# One line per package: the program (a name on PATH or an absolute path) that shows it is there, then
# the Debian package that provides it.
set -euo pipefail
missing=()
while read -r program package; do
    [ -z "$program" ] && continue
    if ! command -v "$program" >/dev/null 2>&1 && [ ! -e "$program" ]; then
        missing+=("$package")
    fi
done <<'PACKAGES'
storescu dcmtk
/usr/lib/postgresql/15/bin/initdb postgresql-15
Orthanc orthanc
/usr/share/orthanc/plugins/libOrthancDicomWeb.so orthanc-dicomweb
/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so orthanc-postgresql
haproxy haproxy
node nodejs
npm npm
chromium chromium
PACKAGES
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages for the tests: ${missing[*]}"
    sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
