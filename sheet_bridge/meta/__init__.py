"""Meta's rules, pure (names, windows, identity, payloads), and the CAPI client."""
