"""Data preparation: corpora, data directories and audio I/O."""
