"""The NATS side: the only package that talks to nats-server (JetStream API, snapshots, restores, preflight)."""
