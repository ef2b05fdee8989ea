"""sheet-bridge: CRM lead stages from a Google Sheet to Meta's Conversions API."""

__version__ = "0.1.0"
