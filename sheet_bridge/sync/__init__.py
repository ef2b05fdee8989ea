"""One sync pass: the pure plan, the ledger, and the imperative run."""
