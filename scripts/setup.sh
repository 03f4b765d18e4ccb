#!/usr/bin/env bash
# Installs what dmoa-p2p needs on a fresh Debian/Ubuntu machine into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(libgmp-dev)  # py-libp2p's fastecdsa compiles against GMP
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  echo "installing system packages: ${missing[*]}"
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test]'
# the plugin distributions the tests use: one shipped plugin and the template users copy
"$venv/bin/python" -m pip install -q -e plugins/dmoa-p2p-vote -e examples/dmoa-plugin-template
# trio ships its own type hints; trio-typing (required by py-libp2p at run time) also installs
# stale stubs for trio 0.22 that mypy would prefer over them
rm -rf "$venv"/lib/python3*/site-packages/trio-stubs
echo "dmoa-p2p is installed in $venv"
