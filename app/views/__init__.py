"""The dashboard's pages, one file per page (Streamlit runs each as a script); each reads and
writes through its data module."""
