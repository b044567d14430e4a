"""Suite-wide set-up that must happen before any test module imports an extension.

- openfhe first: some FHE wheels ship their own libgomp and crash if another one was loaded before.
- TRITON_INTERPRET=1 before triton is imported anywhere (tests of einfhe and server import quant too): this
  machine has no GPU, and quant's Triton kernels run on the CPU interpreter in the tests.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import openfhe  # noqa: E402,F401
