"""Front ends: the CLI and the cloud entry points, thin over the use cases."""
