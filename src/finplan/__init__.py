"""finplan: profile early-exit DNNs and plan their energy-minimal deployment (FIN)."""
import os as _os

# onnxruntime phones home unless told not to; finplan never contacts the internet.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
