#!/bin/bash
# Build the bundled interpreter: CPython 3.11 (Debian's python3.11 source: upstream 3.11.2 plus the
# security backports of Debian's patch series) with its own OpenSSL 3.0, installed at its real path
# /opt/llm-tpu-appliance/python. Runs as root inside the Debian 11 (bullseye, glibc 2.31) build
# chroot, so the result runs on glibc >= 2.31: Ubuntu 20.04 (the SE7/SM7/Airbox images), Debian 11, 12.
#
# Usage: build-python.sh SOURCES_DIR CACHE_DIR
#        build-python.sh --cross ARCH SOURCES_DIR CACHE_DIR BUILD_PYTHON
#        build-python.sh --cached ARCH SOURCES_DIR CACHE_DIR   (exit 0 when ARCH needs no compiling)
#   SOURCES_DIR holds python3.11_*.orig.tar.gz, python3.11_*.debian.tar.xz and openssl_*.orig.tar.gz.
#   CACHE_DIR/python/python-<arch>-<key>.tar.gz caches the result; the key hashes this script, the
#   source names and the architecture, so a second build unpacks it in seconds instead of compiling.
#
# arm64 is cross-compiled (--cross, on the amd64 build chroot with Debian's crossbuild-essential-arm64
# and the arm64 multiarch -dev packages; BUILD_PYTHON is the amd64 build of this same interpreter),
# which stores the compiled install as CACHE_DIR/python/compiled-arm64-<key>.tar.gz. The native run
# in the arm64 chroot (under qemu-user) then only unpacks it and does the steps that need the target's
# own tools and loader (bundling with ldd, strip, the import check): compiling OpenSSL and CPython
# under emulation would take an hour or more.
#
# Every non-glibc library the interpreter and its extension modules need is copied next to it and
# found through $ORIGIN RUNPATHs (set with patchelf): Debian 12 and Ubuntu 20.04 have other
# sonames or versions (libffi.so.7, libsqlite3, libexpat, libncursesw...). GPL modules are left out
# (readline: editline instead; _gdbm/_dbm: dbm.dumb remains), as is nis (libnsl, Kerberos).
set -euo pipefail
MODE=native
case "${1:-}" in
  --cross | --cached) MODE=${1#--}; ARCH=$2; shift 2 ;;
  *) ARCH=$(dpkg --print-architecture) ;;
esac
SRC=$(realpath "$1")
CACHE=$(realpath "$2")
PREFIX=/opt/llm-tpu-appliance/python
declare -A GNU_TYPE=([amd64]=x86_64-linux-gnu [arm64]=aarch64-linux-gnu)
declare -A OPENSSL_TARGET=([amd64]=linux-x86_64 [arm64]=linux-aarch64)

py_orig=$(ls "$SRC"/python3.11_*.orig.tar.gz)
py_debian=$(ls "$SRC"/python3.11_*.debian.tar.xz)
ssl_orig=$(ls "$SRC"/openssl_*.orig.tar.gz)
key=$( (sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; basename -a "$py_orig" "$py_debian" "$ssl_orig"; echo "$ARCH") |
  sha256sum | cut -c1-16)
tarball="$CACHE/python/python-$ARCH-$key.tar.gz"
compiled="$CACHE/python/compiled-$ARCH-$key.tar.gz"

if [ "$MODE" = cached ]; then
  [ -f "$tarball" ] || [ -f "$compiled" ]
  exit
fi
if [ "$MODE" = native ] && [ -f "$tarball" ]; then
  echo "build-python: cached interpreter $tarball"
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  tar -xzf "$tarball" -C "$PREFIX"
  exit 0
fi
if [ "$MODE" = cross ]; then
  [ -f "$compiled" ] && { echo "build-python: cached cross-compiled $ARCH interpreter $compiled"; exit 0; }
  BUILD_PYTHON=$3
  HOST=${GNU_TYPE[$ARCH]}
fi

work=$(mktemp -d /tmp/build-python.XXXXXX)
trap 'rm -rf "$work"' EXIT
jobs=$(nproc)
rm -rf "$PREFIX"
start=$SECONDS

if [ "$MODE" = native ] && [ -f "$compiled" ]; then
  echo "build-python: cross-compiled interpreter $compiled"
  mkdir -p "$PREFIX" && tar -xzf "$compiled" -C "$PREFIX"
else
# --- OpenSSL 3.0 (upstream tarball; Debian's patches only adapt its packaging) ------------------
# Cached on its own (its source and configure line), so that a change to the CPython steps below
# does not rebuild it.
ssl_config=(--prefix="$PREFIX" --libdir=lib --openssldir=/usr/lib/ssl shared no-tests)
ssl_key=$( (basename "$ssl_orig"; echo "${ssl_config[*]}" "$ARCH") | sha256sum | cut -c1-16)
ssl_tarball="$CACHE/python/openssl-$ARCH-$ssl_key.tar.gz"
if [ -f "$ssl_tarball" ]; then
  mkdir -p "$PREFIX" && tar -xzf "$ssl_tarball" -C "$PREFIX"
else
  tar -xzf "$ssl_orig" -C "$work"
  (
    cd "$work"/openssl-*/
    # openssldir: the system's /usr/lib/ssl (certs -> /etc/ssl/certs from ca-certificates, openssl.cnf).
    if [ "$MODE" = cross ]; then
      ./Configure "${OPENSSL_TARGET[$ARCH]}" --cross-compile-prefix="$HOST-" "${ssl_config[@]}" >/dev/null
    else
      ./config "${ssl_config[@]}" >/dev/null
    fi
    # build_sw, not the default target: that also renders about 6,000 man and HTML pages with perl
    # (1.25 of 4.9 CPU-minutes here) that install_sw never installs. Same installed files.
    make -j"$jobs" build_sw >/dev/null
    make install_sw >/dev/null
  )
  mkdir -p "$CACHE/python"
  tar -czf "$ssl_tarball.tmp" -C "$PREFIX" . && mv "$ssl_tarball.tmp" "$ssl_tarball"
  echo "build-python: OpenSSL ($ARCH) built in $((SECONDS - start)) s"
fi

# --- CPython 3.11 ----------------------------------------------------------------------------------
tar -xzf "$py_orig" -C "$work"
cd "$work"/Python-3.11.*/
tar -xJf "$py_debian"
# Debian appends upstream security backports (CVE-*, then more) after its own layout patches
# (multiarch paths, distutils schemes, ensurepip disabled...), which do not apply to a /opt build.
sed -n '/^CVE-/,$p' debian/patches/series | sed 's/[[:space:]]*#.*//' | while read -r patch; do
  [ -n "$patch" ] || continue
  patch -p1 --batch --forward --quiet <"debian/patches/$patch" ||
    { echo "build-python: Debian patch $patch does not apply" >&2; exit 1; }
done
# Debian's pyexpat CVE backports include an internal header: without Py_BUILD_CORE_MODULE the
# module (and _elementtree with it) is silently skipped.
# (3.11 builds it through setup.py.)
grep -q "Extension('pyexpat', sources=\['pyexpat.c'\])" setup.py
sed -i "s/Extension('pyexpat', sources=\['pyexpat.c'\])/Extension('pyexpat', sources=['pyexpat.c'], define_macros=[('Py_BUILD_CORE_MODULE', '1')])/" \
  setup.py
configure=(--prefix="$PREFIX" --with-openssl="$PREFIX" --with-openssl-rpath=auto
  --with-system-ffi --with-system-expat --with-readline=editline
  --enable-loadable-sqlite-extensions --without-static-libpython)
if [ "$MODE" = cross ]; then
  # The target's answers that configure cannot find out by running a program (what a native run on
  # aarch64 Linux with glibc 2.31 finds; configure's cross defaults are pessimistic or wrong: no
  # time.tzset, no getaddrinfo, signed wchar_t), the arm64 -dev packages' pkg-config files;
  # ensurepip needs the target interpreter (build-venv.sh runs it there).
  cat >"$work/config.site" <<'SITE'
ac_cv_file__dev_ptmx=yes
ac_cv_file__dev_ptc=no
ac_cv_buggy_getaddrinfo=no
ac_cv_working_tzset=yes
ac_cv_aligned_required=no
ac_cv_broken_sem_getvalue=no
ac_cv_wchar_t_signed=no
ac_cv_pthread_system_supported=yes
ac_cv_rshift_extends_sign=yes
ac_cv_broken_nice=no
ac_cv_x87_double_rounding=no
SITE
  export CONFIG_SITE="$work/config.site" PKG_CONFIG=pkg-config
  export PKG_CONFIG_LIBDIR="/usr/lib/$HOST/pkgconfig:/usr/share/pkgconfig"
  configure+=(--build=x86_64-linux-gnu --host="$HOST" --with-build-python="$BUILD_PYTHON" --with-ensurepip=no)
else
  configure+=(--with-ensurepip=install)
fi
./configure "${configure[@]}" >/dev/null
make -j"$jobs" >/dev/null 2>"$work/make.log" || { tail -50 "$work/make.log" >&2; exit 1; }
make install >/dev/null 2>>"$work/make.log" || { tail -50 "$work/make.log" >&2; exit 1; }
echo "build-python: CPython ($ARCH) built in $((SECONDS - start)) s"
if [ "$MODE" = cross ]; then
  # The compiler recorded for building extensions on the target is the target's own gcc.
  sed -i "s/\b$HOST-\(gcc\|g++\|c++\|ar\|readelf\)\b/\1/g" \
    "$PREFIX"/lib/python3.11/_sysconfigdata_*.py "$PREFIX"/lib/python3.11/config-3.11-*/Makefile \
    "$PREFIX"/bin/python3.11-config
  mkdir -p "$CACHE/python"
  tar -czf "$compiled.tmp" -C "$PREFIX" . && mv "$compiled.tmp" "$compiled"
  echo "build-python: cross-compiled $ARCH interpreter cached as $compiled"
  exit 0
fi
fi

py="$PREFIX/bin/python3.11"
dynload="$PREFIX/lib/python3.11/lib-dynload"

# --- trim: tests, GUI, static libraries, optimized pycs, GPL and unused modules --------------------
rm -rf "$PREFIX"/lib/python3.11/{test,idlelib,tkinter,turtledemo,lib2to3/tests,ctypes/test,unittest/test} \
  "$PREFIX"/lib/python3.11/{distutils/tests,sqlite3/test,tkinter} \
  "$PREFIX"/lib/python3.11/config-3.11-*/*.a "$PREFIX"/lib/*.a "$PREFIX"/lib/pkgconfig \
  "$PREFIX"/include/openssl "$PREFIX"/share "$PREFIX"/bin/{openssl,c_rehash,idle3*,pydoc3*,2to3*} \
  "$dynload"/{_gdbm,_dbm,nis,_tkinter}.*so
find "$PREFIX" -name '*.opt-[12].pyc' -delete
find "$PREFIX" -name __pycache__ -type d -empty -delete

# --- bundle non-glibc libraries, $ORIGIN RUNPATHs -------------------------------------------------
is_system_lib() {
  case "$1" in
    linux-vdso* | linux-gate* | ld-linux* | libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | \
      libutil.so* | libresolv.so* | libcrypt.so* | libstdc++.so* | libgcc_s.so*) return 0 ;;
  esac
  return 1
}
bundle_deps() {  # copy what $1 needs (and is not from glibc or already bundled) into $PREFIX/lib
  local lib path
  while read -r lib path; do
    is_system_lib "$lib" && continue
    # Already bundled (libssl.so.3 needs libcrypto.so.3 beside it): ldd cannot find it before the
    # $ORIGIN RUNPATHs are set below, and that is not an error.
    [ -e "$PREFIX/lib/$lib" ] && continue
    [ "$path" = "not" ] && { echo "build-python: $1 needs $lib, not found" >&2; exit 1; }
    case "$path" in "$PREFIX"/*) continue ;; esac
    if [ ! -e "$PREFIX/lib/$lib" ]; then
      cp -L "$path" "$PREFIX/lib/$lib"
      chmod 0644 "$PREFIX/lib/$lib"
      echo "$PREFIX/lib/$lib"
    fi
  done < <(ldd "$1" | awk '/=>/ {print $1, $3}')
}
objects=("$py" "$dynload"/*.so "$PREFIX"/lib/libssl.so.3 "$PREFIX"/lib/libcrypto.so.3 \
  "$PREFIX"/lib/engines-3/*.so "$PREFIX"/lib/ossl-modules/*.so)
# bundle_deps runs in a subshell (its output is the list of new files): its failure is checked here.
bundle_new() {  # bundle what $1 needs; the files it brought are appended to $new
  local out
  out=$(bundle_deps "$1") || exit 1
  [ -z "$out" ] || mapfile -t -O "${#new[@]}" new <<<"$out"
}
new=()
for obj in "${objects[@]}"; do bundle_new "$obj"; done
while ((${#new[@]})); do  # the bundled libraries' own dependencies, until nothing new comes
  batch=("${new[@]}"); new=()
  for obj in "${batch[@]}"; do bundle_new "$obj"; done
done
find "$PREFIX" -type f \( -name '*.so' -o -name '*.so.*' -o -path "$PREFIX/bin/*" \) -print0 |
  while IFS= read -r -d '' f; do
    head -c4 "$f" | grep -q ELF || continue
    chmod u+w "$f"
    strip --strip-unneeded "$f"
    case "$f" in
      "$PREFIX"/bin/*) rp='$ORIGIN/../lib' ;;
      "$dynload"/*) rp='$ORIGIN/../..' ;;
      "$PREFIX"/lib/engines-3/* | "$PREFIX"/lib/ossl-modules/*) rp='$ORIGIN/..' ;;
      *) rp='$ORIGIN' ;;
    esac
    patchelf --set-rpath "$rp" "$f"
  done

# --- check: every module we rely on imports, with the bundled libraries only ---------------------
env -i LD_LIBRARY_PATH= "$py" -I - <<'PY'
import importlib, ssl, sys
mods = ["ssl", "_hashlib", "hashlib", "sqlite3", "ctypes", "lzma", "bz2", "zlib", "_uuid", "readline",
        "pyexpat", "xml.etree.ElementTree", "_elementtree", "_decimal", "_curses", "_ctypes", "_bz2",
        "_lzma", "_sqlite3", "_ssl", "select", "_socket", "_multiprocessing", "_posixshmem", "venv", "ensurepip"]
for m in mods:
    importlib.import_module(m)
assert ssl.OPENSSL_VERSION.startswith("OpenSSL 3.0"), ssl.OPENSSL_VERSION
print("build-python:", sys.version.split()[0], ssl.OPENSSL_VERSION)
PY
if ldd "$py" "$dynload"/*.so "$PREFIX"/lib/*.so* | grep -q 'not found'; then
  echo "build-python: unresolved libraries" >&2; exit 1
fi

mkdir -p "$(dirname "$tarball")"
tar -czf "$tarball.tmp" -C "$PREFIX" . && mv "$tarball.tmp" "$tarball"
echo "build-python: done in $((SECONDS - start)) s, $(du -sh "$PREFIX" | cut -f1), cached as $tarball"
