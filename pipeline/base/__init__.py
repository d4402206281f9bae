"""The floor every layer stands on: the error family with its exit codes, text made safe for a terminal, progress."""
