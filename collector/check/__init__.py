"""Checking the archive: verify (holes, duplicates, damaged files) and repair."""
