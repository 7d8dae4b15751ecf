"""The run-time type checker of the test suite (installed by conftest.py): beartype with
PEP 484's numeric tower, so an ``int`` passes where a ``float`` is annotated."""

from beartype import BeartypeConf, beartype

checker = beartype(conf=BeartypeConf(is_pep484_tower=True))

from jaxtyping import TypeCheckError  # noqa: E402

REFUSED = (ValueError, TypeCheckError)
"""What wrongly typed input raises in these tests: the function's own ValueError, or the
type checker's error where an annotation refuses the value first (both name the value)."""
