#!/bin/bash
# Build the appliance's virtualenv at its real path /opt/llm-tpu-appliance/venv on top of the bundled
# interpreter (build-python.sh), inside the build chroot. Usage: build-venv.sh SOURCE_TREE PIP_CACHE
#
# Isolated (no system site-packages) and hermetic: the build host's pip configuration never applies
# (PIP_CONFIG_FILE=/dev/null), versions come from debian/runtime/requirements.lock, wheels only for
# the dependencies (no compiler involved), and `pip check` must pass. Optional add-ons (the host
# engine's torch/transformers, a cp311 sophon-sail wheel) go to /usr/local/lib/llm-tpu-appliance/
# site-packages, which the venv reads after its own packages through a .pth file.
set -euo pipefail
SRC=$(realpath "$1")
OPT=/opt/llm-tpu-appliance
VENV=$OPT/venv
for var in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$var"; done
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME PYTHONUSERBASE
# The download cache lives under the build cache, so that a second build downloads nothing.
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_CACHE_DIR=$2
[ -f /etc/ssl/llm-tpu-build-ca.crt ] && export PIP_CERT=/etc/ssl/llm-tpu-build-ca.crt

rm -rf "$VENV"
"$OPT/python/bin/python3.11" -m venv --without-pip "$VENV"
"$OPT/python/bin/python3.11" -m ensurepip --help >/dev/null
"$VENV/bin/python" -m ensurepip --default-pip >/dev/null
pip=("$VENV/bin/python" -m pip install --quiet --progress-bar off)
"${pip[@]}" --only-binary=:all: --no-deps -r "$SRC/debian/runtime/requirements.lock"
# The appliance itself (pure Python; setuptools comes from the lock, so no isolated build env).
"${pip[@]}" --no-deps --no-build-isolation "$SRC"
"$VENV/bin/python" -m pip check
# The build tools are not needed at run time.
"$VENV/bin/python" -m pip uninstall --quiet --yes setuptools >/dev/null
# pip stays: `llm-tpu` add-on installs use it (see README, the host engine).

# The interpreter's own pip and setuptools (from its install) are not used: the venv has its pip.
find "$OPT/python/lib/python3.11/site-packages" -mindepth 1 -maxdepth 1 ! -name README.txt -exec rm -rf {} +
rm -f "$OPT"/python/bin/pip*

site="$VENV/lib/python3.11/site-packages"
echo "/usr/local/lib/llm-tpu-appliance/site-packages" >"$site/llm-tpu-appliance-addons.pth"
# No `command =` line: it names the build's command; `home` points at the bundled interpreter.
sed -i '/^command = /d' "$VENV/pyvenv.cfg"
rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1
find "$VENV" -name '*.opt-[12].pyc' -delete
# Nothing may point at a build directory. The interpreter's recorded compiler flags (sysconfig data,
# python3.11-config, config-3.11/Makefile) name it in -ffile-prefix-map=<dir>=., which maps it away.
leaks=$(grep -rIl --exclude='*.pyc' --exclude=RECORD --exclude=direct_url.json \
  --exclude='_sysconfigdata_*.py' --exclude=Makefile --exclude='python3.11-config' -e "$SRC" "$OPT" || true)
if [ -n "$leaks" ]; then
  echo "build-venv: the build path $SRC leaked into:" >&2
  echo "$leaks" >&2
  exit 1
fi
"$VENV/bin/llm-tpu" --help >/dev/null
echo "build-venv: $(du -sh "$VENV" | cut -f1)"
