#!/bin/bash
# The image's HEALTHCHECK, one script for every role: it looks at what PID 1 runs.
#   gateway                 GET /healthz on its HTTP port answers 200
#   worker, metrics-writer  GET /readyz on WHISPERFLEET_HEALTH_ADDR answers 200: consuming,
#                           the broker (worker) or the metrics server (writer) reachable, not
#                           draining after SIGTERM
#   anything else           (a one-shot CLI job) healthy while it runs
# HEALTHCHECK_ROLE overrides the role (to try the script outside a container).
# bash only: the runtime image has no curl, ss or procps.
set -euo pipefail

port_of() { # URL, default port -> the URL's port
  local rest=${1#*://}
  rest=${rest##*@}
  rest=${rest%%/*}
  if [[ $rest == *:* ]]; then echo "${rest##*:}"; else echo "$2"; fi
}

get_ok() { # port, path -> 200?
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
  IFS= read -r -t 4 status <&3
  [[ $status == *" 200 "* ]]
}

case "${HEALTHCHECK_ROLE:-$(cat /proc/1/comm)}" in
  gateway)
    get_ok "$(port_of "http://${WHISPERFLEET_HTTP_ADDR:-127.0.0.1:8080}" 8080)" /healthz
    ;;
  worker)
    get_ok "$(port_of "http://${WHISPERFLEET_HEALTH_ADDR:-127.0.0.1:8081}" 8081)" /readyz
    ;;
  metrics-writer)
    get_ok "$(port_of "http://${WHISPERFLEET_HEALTH_ADDR:-127.0.0.1:8082}" 8082)" /readyz
    ;;
  *) exit 0 ;;
esac
