"""Reading and writing: corpus readers, vector/duplicate/error sinks, the output directory and
manifest, snapshots and publishing."""
