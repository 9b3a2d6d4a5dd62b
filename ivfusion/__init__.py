"""ivfusion: infrared-visible and medical image fusion with pretrained PyTorch networks."""
__version__ = "0.1.0"

from .models import create_model, get_model_info, list_models

__all__ = ["__version__", "create_model", "get_model_info", "list_models"]
