"""The Streamlit app, installed as ``mlneurons.app`` (pyproject.toml maps ``apps/`` there).

Streamlit runs ``app.py`` and the pages in ``views/`` as scripts; this file only makes the folder
a regular package, so that an editable install finds it (``mlneurons.interfaces.app_server``).
"""
