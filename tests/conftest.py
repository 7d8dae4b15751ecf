import os
from pathlib import Path

import pytest
from jaxtyping import install_import_hook

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Shapes and dtypes in jaxtyping annotations are checked at run time (as TransformerLens'
# tests do): every mlneurons module imported from here on is decorated with beartype, but
# the command configs, whose own checks turn a bad value into the one-line error a user
# sees (a Literal refused by beartype first would hide it).
PACKAGE = Path(__file__).resolve().parents[1] / "mlneurons"
CONFIGS = {"mlneurons.config", "mlneurons.interfaces.commands"}
CHECKED = [
    name
    for name in sorted(
        f"mlneurons.{path.stem}" for path in [*PACKAGE.glob("*.py"), *PACKAGE.glob("*/")]
    )
    if name not in CONFIGS
    and not name.startswith("mlneurons.__")
    and name != "mlneurons.interfaces"
] + sorted(
    f"mlneurons.interfaces.{path.stem}"
    for path in (PACKAGE / "interfaces").glob("*.py")
    if path.stem != "__init__"
)
install_import_hook(CHECKED, "typecheck.checker")


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory):
    from tiny import make_planted_llama

    return make_planted_llama(tmp_path_factory.mktemp("planted"))


@pytest.fixture(scope="session")
def planted_model(planted_dir):
    import mlneurons

    return mlneurons.load_model(str(planted_dir), device="cpu")


@pytest.fixture(scope="session")
def gpt2_model(tmp_path_factory):
    from tiny import make_gpt2

    import mlneurons

    return mlneurons.load_model(str(make_gpt2(tmp_path_factory.mktemp("gpt2"))), device="cpu")


@pytest.fixture(scope="session")
def gemma():
    import mlneurons

    return mlneurons.load_model("gemma-3-270m", device="cpu")
