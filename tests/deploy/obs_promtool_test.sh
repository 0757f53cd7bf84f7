#!/usr/bin/env bash
# promtool on Polar's Prometheus files (ctest: obs_promtool_*):
#   check-config  promtool check config deploy/prometheus/prometheus.yml (and the rule files it loads)
#   check-rules   promtool check rules deploy/prometheus/rules/*.yml
#   test-rules    promtool test rules deploy/prometheus/tests/*.yml (the alert and recording rule unit tests)
# PROMTOOL picks the binary (default: promtool on PATH, from Debian's
# prometheus package that scripts/install-deps installs). Exit 77 = skipped:
# no promtool.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ]; then
  echo "skipped: promtool not installed (Debian package prometheus; scripts/install-deps)"
  exit 77
fi
prom=$root/deploy/prometheus
case ${1:-} in
  check-config) exec "$promtool" check config "$prom/prometheus.yml" ;;
  check-rules) exec "$promtool" check rules "$prom"/rules/*.yml ;;
  test-rules) exec "$promtool" test rules "$prom"/tests/*.yml ;;
  *) echo "usage: $0 check-config|check-rules|test-rules" >&2; exit 2 ;;
esac
