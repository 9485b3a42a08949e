"""Every distillation method's registry entry (torch-free), one module per method.

`get_method(name)` returns a method's MethodSpec; `METHODS` lists them all; `table_order()` the
paper's row order. Adding a method: a file here with `METHODS.add(MethodSpec(...))` and, if it
has a teacher, its loss and `build` in trainables/distillers/<name>.py (named by
`implementation`); to search it, a space in search_spaces/. Nothing else names methods.
"""
from trainables.methods.spec import (COMMON_HYPERPARAMETERS, METHODS, Hyperparameter, MethodSpec, UnknownMethodError,
                                     get_method, table_order, warmup_factor)

__all__ = ["COMMON_HYPERPARAMETERS", "METHODS", "Hyperparameter", "MethodSpec", "UnknownMethodError", "get_method",
           "table_order", "warmup_factor"]
