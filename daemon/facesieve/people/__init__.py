"""What people do with decisions: the review `desk` (approve, reject, undo), its web
`page`, `restore` and purge, `report`, `stats` and `rejudge`."""
