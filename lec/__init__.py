"""lec: fine-tune and evaluate LLMs the way the NeurIPS 2023 LLM Efficiency Challenge did."""

__version__ = "0.1.0"
