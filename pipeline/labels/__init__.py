"""Moderation: the taxonomy, label history, label CSV import/export, relabel jobs, review queue."""
