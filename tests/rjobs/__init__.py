"""Jobs of the remove, done-record and parent_id tests (issue 19)."""
