"""Self-distillation in rounds (`multiverse train --stage distill`); see training/README.md."""
