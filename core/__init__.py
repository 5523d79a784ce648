"""The method, and nothing else: pure torch, transformers and tokenizers, no store, queue or UI.
Grouped by stage: `vocab` (counting a corpus, ranking the incremental vocabulary, the occurrence
curve, expansion), `train` (token streams, masking, the loop, adaptation, distillation), `judge`
(tasks, fine-tuning, metrics, measures, speed, model cards). At the root, what every stage shares:
`configs` (every setting and its default), `seeds` (the random streams), `devices`, `model_io`,
`corpus` (reading and normalizing text), `errors` and `formatting`. Nothing here imports db,
worker or app."""
