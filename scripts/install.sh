#!/usr/bin/env bash
# Install everything Meshcore needs to run, test and benchmark on this machine, into .venv.
# Safe to run again: each step is skipped or is a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Services that test tiers start on loopback (Redis, coturn), and nft to block a path in direct-mode tests, from Debian.
debian_packages=(redis-server coturn nftables)
missing=()
for package in "${debian_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "warning: not root, so not installing ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "Meshcore needs Python 3.11 or newer; $python is $("$python" --version)" >&2
    exit 1
}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

# llama-cpp-python ships as source only: the first install compiles llama.cpp (5-10 minutes on 2 cores);
# pip caches the wheel, so later installs take seconds.
.venv/bin/python -c 'import llama_cpp' 2>/dev/null || echo "building llama-cpp-python (first time only: 5-10 minutes)"
.venv/bin/python -m pip install --quiet -e ".[node,router,direct,demo,dev]"
.venv/bin/python -c 'import llama_cpp, meshcore_node, meshcore_router, meshcore_sdk' 
echo "meshcore installed in .venv"
