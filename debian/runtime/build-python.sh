#!/bin/bash
# Build the bundled interpreter: CPython 3.11 (Debian's python3.11 source: upstream 3.11.2 plus the
# security backports of Debian's patch series) with its own OpenSSL 3.0, installed at its real path
# /opt/llm-tpu-appliance/python. Runs as root inside the Debian 11 (bullseye, glibc 2.31) build
# chroot, so the result runs on glibc >= 2.31: Ubuntu 20.04 (the SE7/SM7/Airbox images), Debian 11, 12.
#
# Usage: build-python.sh SOURCES_DIR CACHE_DIR
#   SOURCES_DIR holds python3.11_*.orig.tar.gz, python3.11_*.debian.tar.xz and openssl_*.orig.tar.gz.
#   CACHE_DIR/python/<key>.tar.gz caches the result; the key hashes this script and the source names,
#   so a second build unpacks it in seconds instead of compiling for about 5 minutes.
#
# Every non-glibc library the interpreter and its extension modules need is copied next to it and
# found through $ORIGIN RUNPATHs (set with patchelf): Debian 12 and Ubuntu 20.04 have other
# sonames or versions (libffi.so.7, libsqlite3, libexpat, libncursesw...). GPL modules are left out
# (readline: editline instead; _gdbm/_dbm: dbm.dumb remains), as is nis (libnsl, Kerberos).
set -euo pipefail
SRC=$(realpath "$1")
CACHE=$(realpath "$2")
PREFIX=/opt/llm-tpu-appliance/python
ARCH=$(dpkg --print-architecture)

py_orig=$(ls "$SRC"/python3.11_*.orig.tar.gz)
py_debian=$(ls "$SRC"/python3.11_*.debian.tar.xz)
ssl_orig=$(ls "$SRC"/openssl_*.orig.tar.gz)
key=$( (sha256sum "$0" | cut -d' ' -f1; basename -a "$py_orig" "$py_debian" "$ssl_orig"; echo "$ARCH") |
  sha256sum | cut -c1-16)
tarball="$CACHE/python/python-$ARCH-$key.tar.gz"

if [ -f "$tarball" ]; then
  echo "build-python: cached interpreter $tarball"
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  tar -xzf "$tarball" -C "$PREFIX"
  exit 0
fi

work=$(mktemp -d /tmp/build-python.XXXXXX)
trap 'rm -rf "$work"' EXIT
jobs=$(nproc)
rm -rf "$PREFIX"
start=$SECONDS

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
    ./config "${ssl_config[@]}" >/dev/null
    make -j"$jobs" >/dev/null
    make install_sw >/dev/null
  )
  mkdir -p "$CACHE/python"
  tar -czf "$ssl_tarball.tmp" -C "$PREFIX" . && mv "$ssl_tarball.tmp" "$ssl_tarball"
  echo "build-python: OpenSSL built in $((SECONDS - start)) s"
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
./configure --prefix="$PREFIX" --with-openssl="$PREFIX" --with-openssl-rpath=auto \
  --with-ensurepip=install --with-system-ffi --with-system-expat --with-readline=editline \
  --enable-loadable-sqlite-extensions --without-static-libpython >/dev/null
make -j"$jobs" >/dev/null 2>"$work/make.log" || { tail -50 "$work/make.log" >&2; exit 1; }
make install >/dev/null 2>>"$work/make.log" || { tail -50 "$work/make.log" >&2; exit 1; }
echo "build-python: CPython built in $((SECONDS - start)) s"

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
new=()
for obj in "${objects[@]}"; do mapfile -t -O "${#new[@]}" new < <(bundle_deps "$obj"); done
while ((${#new[@]})); do  # the bundled libraries' own dependencies, until nothing new comes
  batch=("${new[@]}"); new=()
  for obj in "${batch[@]}"; do mapfile -t -O "${#new[@]}" new < <(bundle_deps "$obj"); done
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
