"""Data: readers of the standard on-disk formats and bundled sets, and tensor conversion."""
