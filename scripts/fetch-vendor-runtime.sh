#!/usr/bin/env bash
# Fetch the Sophgo runtime for x86 from PyPI (the tpu-mlir wheel ships libbmrt/libbmlib built
# against the BM1684X cmodel simulator, and model_tool), extract only what the appliance and its
# tests use into a cache directory, and checksum it. Nothing vendor-built is kept in git.
#
#   scripts/fetch-vendor-runtime.sh [DEST]     (default: $LLM_TPU_VENDOR_DIR or .cache/vendor)
#
# Result: DEST/tpu-mlir-1.30.2/{bin/model_tool, lib/libbmrt.so.1.0, lib/libbmlib.so.0,
# lib/libcmodel.so, ...} and DEST/tpu-mlir-1.30.2/SHA256SUMS. Idempotent; verifies on every run.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.30.2
WHEEL=tpu_mlir-${VERSION}-py3-none-any.whl
WHEEL_SHA256=542807361c9eeb0777a7bd35e501d8c71cce767e4bce021a3cb3a7c25c35f909
DEST=${1:-${LLM_TPU_VENDOR_DIR:-.cache/vendor}}
OUT=$DEST/tpu-mlir-$VERSION
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if [ -f "$OUT/SHA256SUMS" ] && (cd "$OUT" && sha256sum --quiet -c SHA256SUMS) 2>/dev/null; then
  exit 0
fi

mkdir -p "$DEST/wheel"
if ! echo "$WHEEL_SHA256  $DEST/wheel/$WHEEL" | sha256sum --quiet -c - >/dev/null 2>&1; then
  echo "fetch-vendor-runtime: downloading tpu-mlir==$VERSION from PyPI (about 300 MB)" >&2
  rm -f "$DEST/wheel/$WHEEL"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    --platform manylinux2014_x86_64 -d "$DEST/wheel" "tpu-mlir==$VERSION"
  echo "$WHEEL_SHA256  $DEST/wheel/$WHEEL" | sha256sum --quiet -c - || {
    echo "fetch-vendor-runtime: checksum mismatch for $WHEEL" >&2; exit 1; }
fi

tmp=$(mktemp -d "$DEST/.extract.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$PY" - "$DEST/wheel/$WHEEL" "$tmp" <<'PYEOF'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
want = {
    "tpu_mlir/bin/model_tool": "bin/model_tool",
    "tpu_mlir/lib/libbmrt.so.1.0": "lib/libbmrt.so.1.0",
    "tpu_mlir/lib/libbmlib_bm1684x.so.0": "lib/libbmlib.so.0",
    "tpu_mlir/lib/libcmodel_bm1684x.so": "lib/libcmodel.so",
    "tpu_mlir/lib/third_party/libstdc++.so.6": "lib/third_party/libstdc++.so.6",
    "tpu_mlir/lib/third_party/libgcc_s.so.1": "lib/third_party/libgcc_s.so.1",
    "tpu_mlir/lib/third_party/libomp.so.5": "lib/third_party/libomp.so.5",
    "tpu_mlir/cross_toolchains/ppl_compile/deps/runtime/bmlib/include/bmlib_runtime.h": "include/bmlib_runtime.h",
}
import os, shutil
with zipfile.ZipFile(wheel) as z:
    for src, dst in want.items():
        path = os.path.join(out, dst)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(src) as f, open(path, "wb") as g:
            shutil.copyfileobj(f, g)
PYEOF
chmod +x "$tmp/bin/model_tool"
# The names the loader and libbmlib look for (libbmlib dlopen()s "libcmodel.so" by bare name).
ln -s libbmrt.so.1.0 "$tmp/lib/libbmrt.so"
ln -s libbmlib.so.0 "$tmp/lib/libbmlib.so"
ln -s libcmodel.so "$tmp/lib/libcmodel_bm1684x.so"
ln -s libbmlib.so.0 "$tmp/lib/libbmlib_bm1684x.so.0"
(cd "$tmp" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)
rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
echo "fetch-vendor-runtime: ready in $OUT" >&2
