"""The snapshot repository format: chunker, blobs, packs, index, trees, snapshots, keys, locks."""
