"""The ledger: facesieve's record of every decision. `store` is one SQLite ledger and its
rows; `shards` the per-shard ledgers a Ray scan writes, their locks, and the union every
reader sees; `reading` opens that union for the commands and the page, and says what
became of a decision (`fate`)."""
