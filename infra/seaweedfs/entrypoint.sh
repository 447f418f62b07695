#!/bin/sh
# Start SeaweedFS's S3 server with the key pair from the environment (S3_ACCESS_KEY/S3_SECRET_KEY);
# the same server as the local stack's `weed mini`, without the admin UI and WebDAV.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY in .env}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY in .env}"
umask 077
cat > /tmp/identities.json <<JSON
{"identities": [{"name": "catalogue",
  "credentials": [{"accessKey": "${S3_ACCESS_KEY}", "secretKey": "${S3_SECRET_KEY}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed mini -dir=/data -ip.bind=0.0.0.0 -admin.ui=false -webdav=false \
  -master.telemetry=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -s3.port=8333 -s3.config=/tmp/identities.json
