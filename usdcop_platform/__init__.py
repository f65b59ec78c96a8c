"""usdcop_platform: USD/COP 5-minute bars + daily macro -> RL trading signal, with lineage."""

__version__ = "0.1.0"
