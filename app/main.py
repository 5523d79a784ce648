"""The dashboard's pages, served by app/server.py (`adapt-distill dashboard` or `up`). Settings come
from the environment: ADAPT_DISTILL_HOME, DATABASE_URL, REDIS_URL, and for the login
ADAPT_DISTILL_PASSWORD_HASH (or an [auth] section in the Streamlit secrets), see app/auth.py."""

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from app import auth, connections
from core.formatting import describe_workers

st.set_page_config(page_title="adapt-distill", page_icon=":material/compress:", layout="wide")
auth.require_login()  # stops here until the visitor is logged in, when a login is configured

home = st.Page("views/home.py", title="Overview", icon=":material/dashboard:", default=True)
page = st.navigation([
    home,
    st.Page("views/corpora.py", title="Corpora", icon=":material/library_books:", url_path="corpora"),
    st.Page("views/vocabulary.py", title="Vocabulary", icon=":material/insights:", url_path="vocabulary"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:", url_path="runs"),
    st.Page("views/tasks.py", title="Tasks", icon=":material/label:", url_path="tasks"),
    st.Page("views/experiments.py", title="Experiment", icon=":material/science:", url_path="experiment"),
    st.Page("views/models.py", title="Models", icon=":material/view_in_ar:", url_path="models"),
    # The default page is served at / only, so a typed or bookmarked /overview is sent there.
    st.Page(lambda: st.switch_page(home), title="Overview", url_path="overview", visibility="hidden"),
])

try:
    connections.sessions()  # migrations run once per process
except SQLAlchemyError as exc:
    st.error(f"cannot open the database ({type(exc).__name__}: {getattr(exc, 'orig', None) or exc}): "
             f"check DATABASE_URL and that the database server is up")
    st.stop()

with st.sidebar:
    health = connections.queue_health()
    if not health["configured"]:
        st.warning("REDIS_URL is not set: start everything with `adapt-distill up`, or set REDIS_URL.",
                   icon=":material/cloud_off:")
    elif not health["reachable"]:
        st.error("Redis does not answer at REDIS_URL: is `adapt-distill up` running?", icon=":material/cloud_off:")
    else:
        st.caption(f":material/memory: {describe_workers(health['pool'])}")

# The Train page's form keeps its values when the user visits another page and comes back: Streamlit
# forgets the state of widgets a run does not draw, unless the state is written again on each run.
BUTTONS = {"train_launch", "train_plan_measure", "train_plan_take", "train_plan_chart"}  # their state cannot be set
for key in [k for k in st.session_state if str(k).startswith("train_") and k not in BUTTONS]:
    st.session_state[key] = st.session_state[key]

page.run()
