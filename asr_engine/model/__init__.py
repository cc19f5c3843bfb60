"""The Conformer/CTC encoder: configuration, layers, heads and layer skipping."""
