"""Small private helpers with no home of their own: the atomic file writer (``io``), plain and
Markdown tables (``text``) and parsing ``CUDA_VISIBLE_DEVICES`` (``cuda_visible``).
"""
