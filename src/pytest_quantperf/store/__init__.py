"""Where runs are kept: named baselines and the history (``storage``), the run document's format
(``schema``), baseline names (``names``) and saved runs as a table (``runs``).

Pure Python plus fsspec (imported by ``storage`` alone); this package imports neither torch nor pytest.
"""
