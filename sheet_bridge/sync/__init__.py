"""One sync pass: the pure plan, the ledger, and the imperative run.

- plan.py: what is due for each lead (pure: rows, config, ledger history, now → decisions)
- rows.py: the sheet's rows typed as leads, and the bridge columns' layout
- run.py: the one imperative pass (lock, read, plan, send, record, write back, log)
- send.py: the send loop (a few requests in flight, each answer recorded as it comes)
- outcomes.py: what a row says after a pass (its CAPI cells and the CAPI Log line)
- collector.py: the garbage collector kept off a pass's big structures
- ledger/: the record of every event sent (one contract; SQLite, PostgreSQL)
- edits.py: an edit event's rows: which really changed, recorded at the edit's time
- progress.py: a running pass's phase and progress, kept in the ledger for any process
- adopt.py: rebuilding a lost ledger from the sheet's CAPI columns and CAPI Log
"""
