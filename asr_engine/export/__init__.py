"""ONNX export of the streaming encoder (see the export issue)."""
