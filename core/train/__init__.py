"""Training: token streams and packing, masking, the loop, adaptation, distillation, losses, data parallelism."""
