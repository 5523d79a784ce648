"""The vocabulary: counting a corpus, ranking the incremental vocabulary, the occurrence curve, expansion."""
