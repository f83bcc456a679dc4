#!/usr/bin/env bash
# Installs the Debian packages tidegate needs, only those missing.
#   scripts/deps.sh build   compiler and libraries (make run)
#   scripts/deps.sh test    build + test clients, fuzzer runtime (make test)
#   scripts/deps.sh bench   build + load tools and peers (make bench)
set -euo pipefail

build=(gcc make pkg-config node-llhttp libssl-dev zlib1g-dev liblz4-dev libxxhash-dev liburing-dev
       libc-ares-dev libhiredis-dev)
test=(clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest python3-websockets
      python3-aiohttp python3-redis python3-lz4 redis-server curl procps chromium nodejs)
bench=(wrk nginx libnginx-mod-nchan pushpin redis-server gnuplot procps python3 python3-websockets curl)

want=("${build[@]}")
case "${1:-build}" in
  build) ;;
  test)  want+=("${test[@]}") ;;
  bench) want+=("${bench[@]}") ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

# npm comes with some nodejs builds and is a package of its own in Debian's.
if [ "${1:-build}" = test ] && ! command -v npm >/dev/null; then
  want+=(npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
browser_modules() {
  # The browser test's one npm package (playwright-core drives Debian's Chromium).
  local dir
  dir="$(cd "$(dirname "$0")/../tests/browser" && pwd)"
  if [ "${1:-build}" = test ] && [ ! -d "$dir/node_modules/playwright-core" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  browser_modules "${1:-build}"
  exit 0
fi

echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
browser_modules "${1:-build}"
