#!/bin/bash
# Submit training/slurm/train_2x8.sbatch with its log in logs/ (SLURM opens --output before the job starts, so
# the folder must exist at submission). Arguments go to `multiverse train`, quoting intact.
#   training/slurm/submit.sh [--autoregressive-baseline] [--set KEY=VALUE ...]
set -euo pipefail
mkdir -p logs
exec sbatch --output=logs/%x-%j.out "$(dirname "$0")/train_2x8.sbatch" "$@"
