#!/bin/bash
# eval.figures at full quality (train.damd's defaults, 200 episodes per point, --generalist)
# on the lent GPU; run from the repository root with OUT set (the device tool's output folder).
# LIMIT: seconds before the job is killed (SIGTERM); finished figures and points are kept
# (atomic writes), the sweeps' multi-GB checkpoints are not brought back (--resume redoes
# an unfinished figure's training).
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
F=/tmp/figures
rm -rf $F
RESUME=""
if [ -f figures-resume.tgz ]; then tar xzf figures-resume.tgz -C /tmp && RESUME="--resume"; fi
start=$(date +%s)
CK="--checkpoint-every ${CHECKPOINT_EVERY:-40}"
if [ -n "$RESUME" ]; then ARGS="--resume --out $F $CK"; else ARGS="--generalist --out $F $CK"; fi
/usr/bin/time -v timeout -s TERM "${LIMIT:-540}" python3 -m eval.figures $ARGS >> $OUT/figures.log 2>&1
echo "rc=$? wall=$(( $(date +%s) - start ))s" | tee -a $OUT/figures.log
du -sh $F/* $F/train/* 2>/dev/null
tar czf $OUT/figures.tgz --exclude='checkpoint*' -C /tmp figures
ls -la $OUT
