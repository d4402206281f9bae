"""The archive in a sink: the repository (sole owner of its layout), writer, reader, trust and verification."""
