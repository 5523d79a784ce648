"""The dashboard's entry point, `streamlit run app/server.py` (what `adapt-distill dashboard`, `up`
and docker-compose run): the pages of app/main.py on Streamlit's own server, behind app/door.py
(no upload before login; the session cookie set by the server, HttpOnly)."""

import streamlit as st
from starlette.middleware import Middleware

from app import door

door.mounted = True
app = st.App("main.py", middleware=[Middleware(door.Door)])
