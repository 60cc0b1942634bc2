"""Fine-tuning causal LMs with Multiverse Attention (`multiverse train`); see training/README.md."""
