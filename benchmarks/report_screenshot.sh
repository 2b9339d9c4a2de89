#!/usr/bin/env bash
# docs/report.png and the pull-request comment of a real run with a baseline: README's "first gate in
# three steps" on the default model on the CPU (save "main", then add repetition_penalty=1.1 and compare),
# the HTML report captured by headless Chromium (apt-get install -y chromium), the Markdown report printed.
# Usage: bash benchmarks/report_screenshot.sh [PNG]     (default docs/report.png)
set -euo pipefail
PNG=$(realpath -m "${1:-docs/report.png}")
W=$(mktemp -d); cd "$W"
write() {
  cat > test_perf.py <<PY
import pytest

@pytest.mark.quant_budget(footprint_mb=200, accuracy=0.3)
def test_nf4(quant_model, quantperf):
    lm = quant_model("default", quant="nf4")
    quantperf.generate(lm, "Who invented the light bulb?", max_new_tokens=16$1)
    quantperf.multiple_choice(lm, "builtin", limit=40)
PY
}
write ""
python -m pytest -q -p no:cacheprovider --quantperf-save=main test_perf.py | tail -n 3
write ", repetition_penalty=1.1"
python -m pytest -q -p no:cacheprovider --quantperf-baseline=main --quantperf-html=report.html \
  --quantperf-markdown=report.md test_perf.py | tail -n 3 || true
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
  --user-data-dir="$W/profile" --hide-scrollbars --window-size=1280,1500 --screenshot="$PNG" \
  "file://$W/report.html" 2>/dev/null || true
ls -l "$PNG"
echo "----- report.md (the pull-request comment's body) -----"
cat report.md
