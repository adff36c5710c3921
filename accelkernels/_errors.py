class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot serve this call; the message says why and how to fix it.

    Raised only for explicit requests (``backend="cuda"``, ``use_backend("triton")``,
    ``ACCELKERNELS_BACKEND=...``); ``backend="auto"`` falls back to the reference instead.
    """
