"""Instagram fashion catalogue: collect, label, retrain, predict.

Plain Python, importable and testable without Airflow; the DAGs in `dags/` only wire these stages.
"""
