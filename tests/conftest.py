import os

import pytest
from jaxtyping import install_import_hook

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Shapes and dtypes in jaxtyping annotations are checked at run time (as TransformerLens'
# tests do): every mlneurons module imported from here on is decorated with beartype.
install_import_hook("mlneurons", "typecheck.checker")


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
