"""ivfusion: infrared-visible and medical image fusion with pretrained PyTorch networks."""
from ._version import __version__

from .fusion import fuse, list_methods, method_info
from .registration import Registration, register
from .folders import fuse_dir
from .models import create_model, get_model_info, list_models, load_model
from .compare import compare_grid
from .video import fuse_video
from .deploy import export_onnx
from .io import save_image
from . import data

__all__ = [
    "__version__",
    "fuse",
    "fuse_dir",
    "fuse_video",
    "register",
    "Registration",
    "export_onnx",
    "save_image",
    "data",
    "compare_grid",
    "list_methods",
    "method_info",
    "create_model",
    "get_model_info",
    "list_models",
    "load_model",
]
