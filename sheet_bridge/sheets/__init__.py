"""Reading and writing the lead sheet through the Sheets API."""
