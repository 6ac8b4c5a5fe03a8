#!/usr/bin/env bash
# Launch the same `rnnlm train` command on every worker of a Cloud TPU pod slice.
#
#   experiments/tpu_pod.sh NAME ZONE [rnnlm train arguments...]
#   experiments/tpu_pod.sh my-v4-32 us-central2-b --config experiments/ptb_medium.py --workdir /mnt/shared/runs/ptb_medium
#
# This checkout is copied to every worker, which installs it (requirements-tpu.txt pins jax[tpu]) and runs the
# identical command. On a multi-host slice `rnnlm train` starts JAX's distributed runtime
# by itself (TPU_WORKER_HOSTNAMES lists the hosts; pass --distributed on to force it), each
# process feeds only its own rows of the global batch, and process 0 alone writes logs.
# Checkpoints are written by Orbax from all hosts, so the workdir must be shared storage
# mounted at the same path on every worker (NFS, or a bucket through gcsfuse) for a
# preempted pod to resume.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TPU_NAME ZONE [rnnlm train arguments...]" >&2
  exit 2
fi
name=$1 zone=$2
shift 2
args=$(printf ' %q' "$@")
cd "$(dirname "$0")/.."
git archive --format=tar.gz -o /tmp/rnnlm-src.tar.gz HEAD
gcloud compute tpus tpu-vm scp /tmp/rnnlm-src.tar.gz "$name":rnnlm-src.tar.gz --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "
  set -e
  mkdir -p rnnlm && tar -xzf rnnlm-src.tar.gz -C rnnlm && cd rnnlm
  python3 -m pip install --quiet -r requirements-tpu.txt
  python3 -m rnnlm train$args
"
