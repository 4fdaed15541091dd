#!/usr/bin/env bash
# The original OCR pipeline (wget → tesseract → upload), offline and end to end:
#   1. renders a page with known text (python3-pil, DejaVu font) and serves it over local HTTP;
#   2. starts three `pm-agent exec` executors, `wget`, `tesseract` and `mc`, standing in for the three utility
#      containers of a pipeline pod: each serves its socket in the shared directory (`$work/.pm/NAME.sock`);
#   3. starts `pm dev` (scheduler + agent) on a temporary data folder, sending every step to its executor;
#   4. submits the three-step task: wget fetches the page into the task directory, tesseract reads every
#      image there (the original command, unchanged), and the upload step copies the text into a local
#      "bucket" with rclone, a real S3-style client, through its `:local:` backend (`cp` when rclone is not
#      installed), then moves it in place, so a reader never sees half a file;
#   5. waits for the text in the bucket and prints it.
# Needs: tesseract-ocr, python3-pil, fonts-dejavu-core, wget, rclone (optional) (Debian). Binaries from
# PM_BIN_DIR (default: target/release; build them with `cargo build --release -p pm -p pm-agent -p pmctl`).
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
for executor in wget tesseract mc; do
  "$bin/pm-agent" exec --name "$executor" --listen "unix://$tmp/work/.pm/$executor.sock" 2>>"$tmp/exec.err" &
  pids+=($!)
done
"$bin/pm" dev --listen 127.0.0.1:0 --api-listen off --http-listen off --data "$tmp/data" --work-dir "$tmp/work" \
  --pod-dir "$tmp/work/.pm" >"$tmp/pm.out" 2>"$tmp/pm.err" &
pids+=($!)
for _ in $(seq 200); do
  grep -q "port" "$tmp/http.out" 2>/dev/null && grep -q "listening on" "$tmp/pm.out" 2>/dev/null \
    && [[ -S "$tmp/work/.pm/wget.sock" && -S "$tmp/work/.pm/tesseract.sock" && -S "$tmp/work/.pm/mc.sock" ]] && break
  sleep 0.05
done
port="$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$tmp/http.out" | head -1)"
addr="$(sed -n 's/.*listening on //p' "$tmp/pm.out" | head -1)"
[[ -n "$port" && -n "$addr" ]] || { echo "ocr demo: servers did not start" >&2; cat "$tmp/http.out" "$tmp/pm.err" "$tmp/exec.err" >&2; exit 1; }
if command -v rclone >/dev/null; then
  upload="rclone copy --config /dev/null \$PIPE_DIR :local:$tmp/bucket/.incoming --include '*.txt'"
else
  upload="cp \$PIPE_DIR/*.txt $tmp/bucket/.incoming/"
fi

cat >"$tmp/task.json" <<JSON
{"pipeline":[{"executorName":"wget","commands":["wget -q -O \$PIPE_DIR/page.png http://127.0.0.1:$port/page.png"]},
 {"executorName":"tesseract","commands":["for f in \$(ls -v *.*); do tesseract \$f \${f%.*}; done"]},
 {"executorName":"mc","commands":["$upload && mv $tmp/bucket/.incoming/* $tmp/bucket/","rm -r \$PIPE_DIR/*"]}]}
JSON
"$bin/pmctl" --server "$addr" submit "$tmp/task.json" >/dev/null
for _ in $(seq 600); do
  [[ -s "$tmp/bucket/page.txt" ]] && break
  sleep 0.1
done
[[ -s "$tmp/bucket/page.txt" ]] || { echo "ocr demo: no text in the bucket after 60 s; agent log:" >&2; cat "$tmp/pm.err" "$tmp/exec.err" >&2; exit 1; }
cat "$tmp/bucket/page.txt"
