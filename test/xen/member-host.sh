#!/usr/bin/env bash
# Host 2..N of a multi-host Xen run (run.sh with SNOWFLOCK_XEN_HOSTS): in its dom0, this host's
# agent (`snowflock agent --backend xen --host $SNOWFLOCK_XEN_HOST`, the inventory at
# $SNOWFLOCK_XEN_CLUSTER) until run.sh writes the stop file into the control share; then the agent
# gets SIGTERM (it ends the clones it keeps). A stop-agent file there (a fault host 1's test asked
# for, through run.sh) kills the agent at once. Exit status: 0 when the agent ran until asked to
# stop (or to die) and then ended cleanly; otherwise the agent's own.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
BINARY=$HERE/../../dist/snowflock-baseline
: "${SNOWFLOCK_XEN_HOST:?}" "${SNOWFLOCK_XEN_CLUSTER:?}" "${SNOWFLOCK_XEN_CONTROL:?}"

echo "member host $SNOWFLOCK_XEN_HOST: starting its agent"
"$BINARY" agent --backend xen --host "$SNOWFLOCK_XEN_HOST" --inventory "$SNOWFLOCK_XEN_CLUSTER" &
agent=$!
stopped_on_request=0
while [ ! -e "$SNOWFLOCK_XEN_CONTROL/stop" ]; do
  # A fault host 1's test asked for: this host's agent dies at once, the host runs on without it.
  if [ "$stopped_on_request" = 0 ] && [ -e "$SNOWFLOCK_XEN_CONTROL/stop-agent" ]; then
    kill -KILL "$agent"
    wait "$agent" 2>/dev/null
    stopped_on_request=1
    echo "member host $SNOWFLOCK_XEN_HOST: agent killed (a fault the test asked for)"
  fi
  if [ "$stopped_on_request" = 0 ] && ! kill -0 "$agent" 2>/dev/null; then
    wait "$agent"
    status=$?
    echo "member host $SNOWFLOCK_XEN_HOST: the agent ended on its own (exit status $status)"
    exit $((status == 0 ? 1 : status))
  fi
  sleep 1
done
[ "$stopped_on_request" = 1 ] && exit 0
kill -TERM "$agent"
wait "$agent"
status=$?
echo "member host $SNOWFLOCK_XEN_HOST: agent stopped (exit status $status)"
exit "$status"
