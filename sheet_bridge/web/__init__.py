"""The Flask service the Apps Script sidebar calls."""
