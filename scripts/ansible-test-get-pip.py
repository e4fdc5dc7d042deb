# Offline stand-in for get-pip.py, the script ansible-test runs to put pip into the
# virtual environments it creates. It bootstraps pip from the interpreter's bundled
# wheel, then runs "pip install ARGS" with the machine's pip configuration, as
# get-pip.py would. scripts/sanity.sh installs it where ansible-test looks for it.
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
# ensurepip points pip at /dev/null for its own run; the install below needs the real config.
os.environ.pop("PIP_CONFIG_FILE", None)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
