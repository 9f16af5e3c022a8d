"""Reading the archive: DuckDB views, SQL files, pandas loaders and research helpers."""
