"""Suite-wide fixtures."""

import os

import pytest
import torch

# Without a GPU, the Triton kernels of the fused steps are tested on CPU tensors under
# Triton's interpreter (tests/optim/test_triton.py), which must be chosen before triton is
# first imported (torch._dynamo imports it). It changes nothing else: on CPU, nothing else
# runs Triton code.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """The suite neither reads nor writes the user's cache (tokenized corpora)."""
    old = os.environ.get("ADAPTOPT_CACHE")
    os.environ["ADAPTOPT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        del os.environ["ADAPTOPT_CACHE"]
    else:
        os.environ["ADAPTOPT_CACHE"] = old


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny models, which run fastest single-threaded on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
