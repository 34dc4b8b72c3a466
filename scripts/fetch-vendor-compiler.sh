#!/usr/bin/env bash
# Extract the tpu-mlir compiler toolchain (tpuc-opt, model_tool, the PPL JIT toolchain and the
# libraries they load) from the same PyPI wheel fetch-vendor-runtime.sh downloads, into the cache.
# Nothing vendor-built is kept in git.
#
#   scripts/fetch-vendor-compiler.sh [DEST]     (default: $LLM_TPU_VENDOR_DIR or .cache/vendor)
#
# Result: DEST/tpu-mlir-compiler-1.30.2/{bin/tpuc-opt, bin/model_tool, lib/..., cross_toolchains/ppl_compile/...}
# and its SHA256SUMS. The wheel's own libc.so.6, libm.so.6 and libpthread.so.0 are left out: they clash
# with the system libc (bash and gcc, started by the PPL JIT, would not run). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.30.2
WHEEL=tpu_mlir-${VERSION}-py3-none-any.whl
DEST=${1:-${LLM_TPU_VENDOR_DIR:-.cache/vendor}}
OUT=$DEST/tpu-mlir-compiler-$VERSION
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if [ -f "$OUT/SHA256SUMS" ] && (cd "$OUT" && sha256sum --quiet -c SHA256SUMS) 2>/dev/null; then
  exit 0
fi
./scripts/fetch-vendor-runtime.sh "$DEST"   # downloads and checks the wheel

tmp=$(mktemp -d "$DEST/.extract-compiler.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetch-vendor-compiler: extracting the compiler from $WHEEL" >&2
"$PY" - "$DEST/wheel/$WHEEL" "$tmp" <<'PYEOF'
import os, shutil, stat, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
# What a build opens (traced with strace over every net kind, bf16 and w4bf16).
files = [
    "bin/tpuc-opt", "bin/model_tool",
    "lib/libbackend_bm1684x.so", "lib/libbm1684x_kernel_module.so", "lib/libcpuop.so",
    "lib/libortools.so.9", "lib/libppl_host.so",
    "lib/third_party/libdnnl.so.3", "lib/third_party/libgcc_s.so.1", "lib/third_party/liblzma.so.5",
    "lib/third_party/libomp.so.5", "lib/third_party/libstdc++.so.6", "lib/third_party/libz.so.1",
]
trees = ["cross_toolchains/ppl_compile/"]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        rel = info.filename[len("tpu_mlir/"):]
        if not info.filename.startswith("tpu_mlir/") or info.is_dir():
            continue
        if rel not in files and not any(rel.startswith(t) for t in trees):
            continue
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(info) as f, open(path, "wb") as g:
            shutil.copyfileobj(f, g)
        mode = (info.external_attr >> 16) & 0o777
        if mode & 0o111 or rel.startswith("bin/") or "/bin/" in rel:
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PYEOF
(cd "$tmp" && find . -type f ! -name SHA256SUMS -printf '%P\n' | sort | xargs sha256sum >SHA256SUMS)
rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
echo "fetch-vendor-compiler: ready in $OUT" >&2
