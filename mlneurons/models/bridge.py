"""The type of a loaded model, for annotations: ``transformer_lens``' ``TransformerBridge``.

Type checkers see the real class. At run time the name is :data:`typing.Any`, so that an
annotation ``model: TransformerBridge`` resolves (run-time checkers such as beartype read
annotations when a function is called) without importing ``transformer_lens``, which takes
seconds and imports torch: ``import mlneurons`` and ``mlneurons --help`` must not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TransformerBridge"]

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
else:
    TransformerBridge = Any  # at run time any model object
