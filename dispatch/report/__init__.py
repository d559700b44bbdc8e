"""Listening page of a recipe (``exp/report/index.html``): :func:`dispatch.report.page.build_report`, whose
CLI is ``python -m dispatch.bin.make_report``; :mod:`dispatch.report.choose` holds the rule that picks the
utterances shown (RESULTS.md pictures the same ones).
"""
