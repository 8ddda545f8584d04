"""Server-rendered HTML: the report page of a check and the API reference (no JavaScript, no build)."""
