"""Predict: every catalogued picture gets a colour and a category from the champion models.

`champions` loads the models, `pictures` streams pictures from the object store decoded in
parallel, `writeback` saves the scores set-based, and `batch` runs the pass (the command line's
`catalogue predict` and the `predict_catalogue` DAG's shards).
"""
