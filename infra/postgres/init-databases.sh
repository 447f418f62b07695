#!/bin/bash
# Runs once, when the Postgres volume is new: one database for the catalogue, one for Airflow's
# metadata, each owned by its own login role, and pgvector enabled in the catalogue's (creating
# the extension takes a superuser). Passwords come from the environment (.env).
set -euo pipefail
: "${CATALOGUE_DB_PASSWORD:?set CATALOGUE_DB_PASSWORD in .env}"
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
  -v catalogue_password="$CATALOGUE_DB_PASSWORD" -v airflow_password="$AIRFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE catalogue LOGIN PASSWORD :'catalogue_password' CREATEROLE;
CREATE DATABASE catalogue OWNER catalogue;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
\connect catalogue
CREATE EXTENSION IF NOT EXISTS vector;
SQL
