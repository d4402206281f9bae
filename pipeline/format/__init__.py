"""The archive format as pure functions: manifests, sets, payload encodings, codecs, sealing, parsers. No I/O."""
