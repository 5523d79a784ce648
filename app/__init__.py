"""The two faces of adapt-distill. The dashboard: `main.py` (Streamlit's entry, with the login in
`auth.py` and `access.py`), one page per file in `views/`, one data module per page in `data/`,
and what pages share (`ui.py`, `charts.py`, `connections.py`, `tokenization.py`). The command
line: `cli/`. Both act through worker's public functions and read the store through db's."""
