"""One stream between NATS and the archive: back it up, restore it, replace a live stream with a backup."""
