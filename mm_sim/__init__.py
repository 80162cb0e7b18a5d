"""mm_sim: what edge, in basis points, does a market-making configuration really earn?"""

__version__ = "0.1.0"
