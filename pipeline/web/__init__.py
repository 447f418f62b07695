"""The moderators' workbench: a web page over the label history, jobs, undo and review queue.

`create_app` (`pipeline.web.app`) builds the FastAPI application `catalogue web` serves: pages
drawn on the server (Jinja2 templates in `templates/`) with a little JavaScript (`static/`).
Every label written in the browser goes through `pipeline.labels` (the same functions as the
command line and the relabel DAG), recorded as the signed-in person (`pipeline.web.users`).
Pictures reach the browser as thumbnails made from the object store (`pipeline.web.thumbnails`).
"""
