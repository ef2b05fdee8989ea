"""Local stand-ins (Sheets emulator, fake Meta), the playground and the demo."""
