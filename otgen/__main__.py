"""``python -m otgen ...`` — the same CLI as the ``otgen`` command.

Under torchrun use ``torchrun ... -m otgen fit-ot ...``: ``$(which otgen)`` is not always a
Python script (pyenv and conda install shell shims), and torchrun runs its argument with Python.
"""

import sys

from otgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
