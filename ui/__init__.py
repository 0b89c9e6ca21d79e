"""Streamlit-only helpers shared by the pages (the library under lib/ never imports streamlit)."""
