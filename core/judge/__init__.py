"""Judging models: tasks, fine-tuning, metrics, intrinsic measures, speed, contamination, model cards."""
