"""Keys: the per-backup data key and the slots that wrap it (age, raw, passphrase, cloud KMS)."""
