"""The jobs behind the CLI: embed (and reembed), dedupe, neighbours, and the end-of-run summary."""
