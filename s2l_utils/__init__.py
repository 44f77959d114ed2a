"""s2l_utils: the tested package behind the Shake-to-Leak notebooks.

Data flows one way: world -> pretrain -> target pipeline -> (SP synthesis -> fine-tune) -> attacks -> report.
Each step lives in its own module; notebooks only orchestrate.
"""

__version__ = "0.1.0"
