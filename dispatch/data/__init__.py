"""Audio I/O, Kaldi-style data directories, stage 2 formatting and atomic writes (corpus preparation: dispatch.corpora)."""
