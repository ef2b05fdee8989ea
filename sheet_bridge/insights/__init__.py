"""After the plumbing: what the ledger says about the funnel (read-only).

funnel.py: the weekly funnel report and its advice; chart.py: the report as an SVG chart;
audience.py: the junk-lead audience file. Nothing here sends or writes to the sheet.
"""
