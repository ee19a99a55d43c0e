#!/bin/bash
# One sweep as three processes on three hosts over ssh (docs/distributed.md).
HOSTS=(host0 host1 host2); PORT=12345
for i in "${!HOSTS[@]}"; do
  ssh "${HOSTS[$i]}" "cd $PWD && .venv/bin/python -m train.sweep --distributed \
      --coordinator ${HOSTS[0]}:$PORT --num-processes ${#HOSTS[@]} --process-id $i \
      --name big --seeds 8 --grid lr=1e-4,5e-4,1e-3" 2>&1 | sed "s/^/[$i] /" &
done
wait
