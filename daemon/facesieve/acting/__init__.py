"""Acting: the only layer that changes files. `moves` holds the state folders (`Places`)
and makes the crash-safe moves and deletes; `apply` turns a judgement into a ledger
intent and acts on it."""
