#!/bin/bash
# GGUF bench: 1.1B shape (bf16 HF source) → GGUF F16 and Q8_0; baseline cp of the same bytes.
set -e
cd "$(dirname "$0")/.."
B=${BENCH_DIR:-/tmp/bench-gguf}
mkdir -p $B; rm -rf $B/src $B/*.gguf $B/copy
echo "== synth source"; date
node bin/run.js synth --preset 1.1B --to hf --dtype bf16 --seed 1 --out $B/src
ls -la $B/src
sync
echo "== cp baseline"
/usr/bin/time -v cp $B/src/model.safetensors $B/copy 2>&1 | grep -E "Elapsed|Maximum resident"
rm -f $B/copy; sync
for dt in f16 q8_0; do
  echo "== convert $dt"; uptime
  /usr/bin/time -v node bin/run.js convert $B/src --to gguf --dtype $dt --out $B/model-$dt.gguf 2>&1 | grep -E "→|Elapsed|Maximum resident|gguf  "
  ls -la $B/model-$dt.gguf
  sync
done
echo "== done"; date
