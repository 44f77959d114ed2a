"""s2l_utils: the tested package behind the Shake-to-Leak notebooks.

Data flows one way: world -> pretrain -> target pipeline -> (SP synthesis -> fine-tune) -> attacks -> report.
Each step lives in its own module; notebooks only orchestrate.
"""

import logging

__version__ = "0.1.0"


class _TorchvisionFallbackFilter(logging.Filter):
    """Drops transformers' notice that an image processor falls back to its PIL backend without torchvision (the
    package uses the PIL backend); every other message of that logger still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


# set before transformers is imported: the logger object is the one transformers' module logs through
logging.getLogger("transformers.utils.import_utils").addFilter(_TorchvisionFallbackFilter())
