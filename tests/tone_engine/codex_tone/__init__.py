"""A test-only engine whose videos have a known sound track."""
