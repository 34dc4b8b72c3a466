#!/usr/bin/env bash
# Build the architecture-independent package llm-tpu-model-smollm2-135m from compiled model
# directories (bmodel + tokenizer + manifest.json each, as `llm-tpu models compile -o DIR` writes
# them), with dpkg-deb alone (no debhelper, no source package: the content is built data).
#
#   build-deb.sh OUT_DIR MODEL_DIR...
#
# The models go to /usr/share/llm-tpu/models/<dir name>/, the read-only model root the appliance
# searches last (appliance/paths.py): dpkg owns the files, `llm-tpu models rm` cannot delete them.
# Prints the path of the .deb. Compression: xz -3 (bmodels barely compress; -6 costs minutes for
# nothing); dpkg on Ubuntu 20.04 boxes reads xz, not zstd.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR MODEL_DIR..." >&2; exit 2; }
out=$1; shift
package=llm-tpu-model-smollm2-135m
version=$(sed -n '1s/.*(\(.*\)).*/\1/p' "$here/changelog")
for m in "$@"; do
  [ -f "$m/manifest.json" ] || { echo "$m is not a compiled model directory (no manifest.json)" >&2; exit 2; }
  ls "$m"/*.bmodel >/dev/null 2>&1 || { echo "$m has no .bmodel" >&2; exit 2; }
done
mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
models=$stage/usr/share/llm-tpu/models
doc=$stage/usr/share/doc/$package
mkdir -p "$models" "$doc" "$stage/DEBIAN"
for m in "$@"; do
  cp -r --no-preserve=mode,ownership "$m" "$models/$(basename "$m")"
done
install -m 0644 "$here/copyright" "$doc/copyright"
gzip -9n <"$here/changelog" >"$doc/changelog.gz"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" "$here/control.in" >"$stage/DEBIAN/control"
chmod 0644 "$stage/DEBIAN/control"
deb=$out/${package}_${version}_all.deb
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date -d "$(sed -n 's/^ -- .*  //p' "$here/changelog" | head -1)" +%s)} \
  dpkg-deb --root-owner-group -Zxz -z3 --build "$stage" "$deb" >/dev/null
echo "$deb"
