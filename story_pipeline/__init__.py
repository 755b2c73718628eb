"""story_pipeline: Animate-A-Story (retrieval-augmented storytelling video generation).

Library modules here are framework-free; Dagster wiring lives in ``assets/``, ``resources/``,
``sensors/`` and ``definitions.py``.
"""

import os
import warnings

# Nothing is ever downloaded at run time: make every Hugging Face loader offline by default
# (without this, loading even a local folder waits on network retries).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LANCE_LOG", "error")  # lance logs routine notices as WARN on stderr
os.environ.setdefault("LANCEDB_LOG", "error")

# LanceDB warns on every fork once loaded; our child processes are fork+exec (the UIs) or spawned
# (ToyWorld rendering), which run no LanceDB code inherited from the parent.
warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)

__version__ = "0.1.0"
