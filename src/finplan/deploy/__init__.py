"""Deployment: per-node ONNX parts and manifests (emit), the per-node runtime, the local
executor, the closed-loop report and the equivalence check. Format: docs/deployment-format.md."""
