"""Keys and sealing: the per-backup data key, the slots that wrap it (age, raw, passphrase, cloud KMS), AEAD."""
