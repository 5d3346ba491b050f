"""What transformers' ModelOutput lets a ported script do with a model's output: `out[0]` (the first field
that is set: the loss when labels were given), `out["logits"]`, `loss, logits = out[:2]`, `to_tuple()`
and `keys()`.
Our outputs are plain dataclasses; this mixin adds that indexing, in transformers' field order."""

from __future__ import annotations

import dataclasses
import functools

from torch.utils import _pytree as pytree  # transformers registers its outputs the same way


class ModelOutput:
    # The fields transformers' tuple holds, in its order; None: every field of the dataclass.
    tuple_fields: tuple[str, ...] | None = None

    def __init_subclass__(cls, **kwargs):
        """Each output is a pytree node, as transformers' are: torch.export and the ONNX exporter built on it
        return it from a captured graph."""
        super().__init_subclass__(**kwargs)
        pytree.register_pytree_node(cls, _flatten, functools.partial(_unflatten, cls),
                                    serialized_type_name=f"{cls.__module__}.{cls.__qualname__}")

    def keys(self) -> list[str]:
        """The fields that are set, in transformers' order: what iterating over the output gives, as there."""
        names = self.tuple_fields or tuple(f.name for f in dataclasses.fields(self))
        return [name for name in names if getattr(self, name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.keys())

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __getitem__(self, key):
        if isinstance(key, str):
            if getattr(self, key, None) is None:
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]


def _flatten(output: ModelOutput) -> tuple[list, list[str]]:
    names = [field.name for field in dataclasses.fields(output)]
    return [getattr(output, name) for name in names], names


def _unflatten(cls, values, names: list[str]) -> ModelOutput:
    return cls(**dict(zip(names, values)))
