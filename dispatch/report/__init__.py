"""Listening page of a recipe: ``exp/report/index.html``, a static page that opens from the file system.

See :func:`dispatch.report.page.build_report` (the CLI is ``python -m dispatch.bin.make_report``) and
:mod:`dispatch.report.choose` for the rule that picks the utterances shown.
"""
from dispatch.report.inputs import ReportInputError
from dispatch.report.page import build_report

__all__ = ["build_report", "ReportInputError"]
