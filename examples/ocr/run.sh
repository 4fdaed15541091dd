#!/usr/bin/env bash
# The original OCR pipeline (wget → tesseract → upload), offline and end to end:
#   1. renders a page with known text (python3-pil, DejaVu font) and serves it over local HTTP;
#   2. starts `pm dev` (scheduler + agent) on a temporary data folder;
#   3. submits the three-step task: wget fetches the page into the task directory, tesseract reads every
#      image there (the original command, unchanged), and the upload step copies the text to a local "bucket"
#      directory (`cp` then `mv`, so a reader never sees half a file; standing in for `mc cp` to S3);
#   4. waits for the text in the bucket and prints it.
# Needs: tesseract-ocr, python3-pil, fonts-dejavu-core, wget (Debian). Binaries from PM_BIN_DIR (default:
# target/release; build them with `cargo build --release -p pm -p pmctl`).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${PM_BIN_DIR:-$root/target/release}"
text="${OCR_TEXT:-PIPELINE MANAGER READS THIS PAGE}"
for tool in tesseract wget /usr/bin/python3; do
  command -v "$tool" >/dev/null || { echo "ocr demo: $tool is missing (apt-get install tesseract-ocr wget python3-pil fonts-dejavu-core)" >&2; exit 1; }
done
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

mkdir -p "$tmp/www" "$tmp/bucket/.incoming"
/usr/bin/python3 "$root/examples/ocr/make_page.py" "$tmp/www/page.png" "$text"
/usr/bin/python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/http.out" 2>&1 &
pids+=($!)
"$bin/pm" dev --listen 127.0.0.1:0 --api-listen off --data "$tmp/data" --work-dir "$tmp/work" >"$tmp/pm.out" 2>"$tmp/pm.err" &
pids+=($!)
for _ in $(seq 200); do
  grep -q "port" "$tmp/http.out" 2>/dev/null && grep -q "listening on" "$tmp/pm.out" 2>/dev/null && break
  sleep 0.05
done
port="$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$tmp/http.out" | head -1)"
addr="$(sed -n 's/.*listening on //p' "$tmp/pm.out" | head -1)"
[[ -n "$port" && -n "$addr" ]] || { echo "ocr demo: servers did not start" >&2; cat "$tmp/http.out" "$tmp/pm.err" >&2; exit 1; }

cat >"$tmp/task.json" <<JSON
{"pipeline":[{"executorName":"wget","commands":["wget -q -O \$PIPE_DIR/page.png http://127.0.0.1:$port/page.png"]},
 {"executorName":"tesseract","commands":["for f in \$(ls -v *.*); do tesseract \$f \${f%.*}; done"]},
 {"executorName":"mc","commands":["cp \$PIPE_DIR/*.txt $tmp/bucket/.incoming/ && mv $tmp/bucket/.incoming/* $tmp/bucket/","rm -r \$PIPE_DIR/*"]}]}
JSON
"$bin/pmctl" --server "$addr" submit "$tmp/task.json" >/dev/null
for _ in $(seq 600); do
  [[ -s "$tmp/bucket/page.txt" ]] && break
  sleep 0.1
done
[[ -s "$tmp/bucket/page.txt" ]] || { echo "ocr demo: no text in the bucket after 60 s; agent log:" >&2; cat "$tmp/pm.err" >&2; exit 1; }
cat "$tmp/bucket/page.txt"
