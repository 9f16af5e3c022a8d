"""Collecting: the jobs the daemon schedules, from a response to rows in the archive."""
