"""Date and time formats of the console (FORMAT_MODULE_PATH)."""
