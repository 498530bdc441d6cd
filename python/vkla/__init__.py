"""vkla: linear-attention ops on any Vulkan device, from Python.

numpy functions here (linear_attn, delta_rule, lion and their _backward twins); PyTorch
autograd functions with flash-linear-attention's names in `vkla.torch`.
"""
from ._core import Context, VklaError, default_context, set_default_context
from ._numpy import (delta_rule, delta_rule_backward, linear_attn, linear_attn_backward, lion,
                     lion_backward)
from . import _lib

library_path = _lib.path

__all__ = ["Context", "VklaError", "default_context", "set_default_context", "linear_attn",
           "delta_rule", "lion", "linear_attn_backward", "delta_rule_backward", "lion_backward",
           "library_path"]
