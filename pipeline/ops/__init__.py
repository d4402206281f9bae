"""The use cases, one module per command: accounts, disaster recovery, drills, natscli interop, pruning, listing."""
