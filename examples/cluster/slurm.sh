#!/bin/bash
# A sweep on a SLURM allocation: a Ray head on the first node, a Ray worker on every other node
# (each started through srun and kept running for the job), the sweep's storage on the shared
# filesystem, and the `ltkd sweep` driver in this batch script, which SLURM runs on the first node.
#
#   sbatch examples/cluster/slurm.sh my-sweep.toml [more ltkd sweep flags, e.g. --set student_epochs=60]
#
# Settings (environment): LTKD_STORAGE, a folder every node mounts (default: $PWD/sweeps, where
# sbatch was run, which is shared on most clusters); RAY_PORT (default 6379); LTKD_HEAD_IP, the
# head's address when its first one is not the one nodes reach each other on.
#SBATCH --job-name=ltkd-sweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-node=4
#SBATCH --time=24:00:00
#SBATCH --output=ltkd-sweep-%j.log
set -euo pipefail

config=${1:?usage: sbatch slurm.sh CONFIG [ltkd sweep flags]}
shift
storage=${LTKD_STORAGE:-$PWD/sweeps}
port=${RAY_PORT:-6379}
cpus=${SLURM_CPUS_PER_TASK:-$(nproc)}
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=${LTKD_HEAD_IP:-$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk '{print $1}')}
address="$head_ip:$port"

# Ray >= 2.59 asks every node and the driver for the same token; srun passes the environment on.
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}
export RAY_USAGE_STATS_ENABLED=0

pids=()
stop_ray() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }
trap stop_ray EXIT

echo "ltkd: Ray head on $head_node ($address), ${#nodes[@]} node(s), storage $storage"
srun --nodes=1 --ntasks=1 --overlap -w "$head_node" \
    ray start --head --block --node-ip-address="$head_ip" --port="$port" --num-cpus="$cpus" --num-gpus="$gpus" \
    --include-dashboard=false --disable-usage-stats &
pids+=($!)

# The head answers before the workers join it.
for _ in $(seq 120); do
    if python3 -c "import ray; ray.init(address='$address', logging_level='ERROR')" >/dev/null 2>&1; then break; fi
    sleep 2
done

for node in "${nodes[@]:1}"; do
    srun --nodes=1 --ntasks=1 --overlap -w "$node" \
        ray start --block --address="$address" --num-cpus="$cpus" --num-gpus="$gpus" --disable-usage-stats &
    pids+=($!)
done

# The driver: on this (the head) node; trials are spread over every node's CPUs and GPUs.
ltkd sweep "$config" --storage "$storage" --address "$address" "$@"
