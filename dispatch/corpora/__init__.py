"""Corpus preparation of the recipes: each module writes the Kaldi-style data dirs of one corpus.

- :mod:`dispatch.corpora.voicebank`: VoiceBank+DEMAND (``egs2/voicebank_demand/enh_kd1/local/data.sh``);
- :mod:`dispatch.corpora.dns`: DNS Challenge 2020 synthesis and data dirs (``egs2/dns_ins20``);
- :mod:`dispatch.corpora.mini_corpus` and :mod:`dispatch.corpora.noise`: the synthetic flite/espeak-ng
  corpus of ``egs2/mini_flite``;
- :mod:`dispatch.corpora.common`: checks and conversion shared by the downloaded corpora.

Each recipe's ``local/data.sh`` calls one of them (``python -m dispatch.corpora.<name> --help``). They
live in the package rather than in each ``local/`` because recipes share them (the DNS and VoiceBank
recipes use one set of helpers) and the tests import them; audio I/O, data dirs and atomic writes stay
in :mod:`dispatch.data`.
"""
