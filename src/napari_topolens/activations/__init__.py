"""Activations of any ``torch.nn.Module``, with pixel provenance. Never imports napari or Qt."""

from .pointcloud import PointCloud

__all__ = [
    "SAMPLING_MODES",
    "PointCloud",
    "extract_activations",
    "iter_extract_activations",
    "list_layers",
    "load_model",
    "load_state_dict",
    "predict_proba",
]

_LAZY = {
    "SAMPLING_MODES": ".options",
    "extract_activations": ".extract",
    "iter_extract_activations": ".extract",
    "predict_proba": ".extract",
    "list_layers": ".models",
    "load_model": ".models",
    "load_state_dict": ".models",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
