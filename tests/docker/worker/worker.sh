#!/bin/sh
# A container task for the tests. It prints one record per event on stdout, which the node
# forwards through its logger: `REC {json}` in the shape tests/checker.py reads (start, then
# stop when it ends), plus what the node put in its environment.
#   worker.sh            loop until SIGTERM (docker stop), then record the stop
#   worker.sh once S     run S seconds, record the stop, exit 0
#   worker.sh fail CODE  record the stop, exit CODE
run=$(cat /proc/sys/kernel/random/uuid)
rec() {
    printf 'REC {"t": %s, "e": "%s", "node": "%s", "task": "%s", "slot": %s, "fence": %s, "generation": %s, "pid": %s, "thread": "container", "run": "%s", "greeting": "%s"}\n' \
        "$(date +%s.%N)" "$1" "$XCONSUMER_NODE" "$XCONSUMER_TASK" "$XCONSUMER_SLOT" \
        "$XCONSUMER_FENCE" "$XCONSUMER_GENERATION" "$$" "$run" "${GREETING:-}"
}
trap 'rec stop; exit 0' TERM
rec start
case "${1:-loop}" in
    once) sleep "${2:-0.2}"; rec stop; exit 0 ;;
    fail) rec stop; exit "${2:-3}" ;;
esac
while :; do sleep 0.05; done
