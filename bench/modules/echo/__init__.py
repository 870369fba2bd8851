"""The echo module: the call every benchmark measures."""
