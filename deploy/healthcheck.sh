#!/bin/bash
# The image's HEALTHCHECK, one script for every role: it looks at what PID 1 runs.
#   gateway                 GET /healthz on its HTTP port answers 200
#   worker, metrics-writer  an established TCP connection to RabbitMQ (their one input;
#                           lapin reconnects on its own, so a lost one shows here)
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

case "${HEALTHCHECK_ROLE:-$(cat /proc/1/comm)}" in
  gateway)
    port=$(port_of "http://${WHISPERFLEET_HTTP_ADDR:-127.0.0.1:8080}" 8080)
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    IFS= read -r -t 4 status <&3
    [[ $status == *" 200 "* ]]
    ;;
  worker | metrics-writer)
    port=$(port_of "${WHISPERFLEET_AMQP_URL:-amqp://rabbitmq}" 5672)
    # /proc/net/tcp*: "sl local rem st ...", remote port in hex, state 01 = ESTABLISHED.
    hex=$(printf '%04X' "$port")
    grep -qsE "^ *[0-9]+: [0-9A-F]+:[0-9A-F]{4} [0-9A-F]+:$hex 01 " /proc/net/tcp /proc/net/tcp6
    ;;
  *) exit 0 ;;
esac
