"""Web pages of xrd-bluesky (``pip install "xrd-bluesky[web]"``): the DF-XRM planner
(:mod:`.planner_logic`, pure functions; :mod:`.planner_app`, the Streamlit script)."""
