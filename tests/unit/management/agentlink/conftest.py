import pytest

from agentlink_helpers import Pki


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path)
