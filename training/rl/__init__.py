"""Parallel-aware RL over exact fork/merge rollouts (`multiverse train --stage rl`); see training/README.md."""
