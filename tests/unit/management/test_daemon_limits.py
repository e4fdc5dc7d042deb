"""The engine raises its own open-file limit: one socket per connected agent."""

import json
import resource
import subprocess
import sys

from stackwright.management.daemon import OPEN_FILES_WANTED

PROBE = """
import json, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from stackwright.management.daemon import raise_open_file_limit
returned = raise_open_file_limit()
print(json.dumps([returned, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard]))
"""


def test_a_low_soft_limit_is_raised_towards_the_hard_limit():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    returned, soft, hard = json.loads(out.stdout)
    expected = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    assert soft == returned == expected
    assert soft > 256
