#!/bin/bash
# Container health probe: exit 0 when GET /health on the local server answers
# 200 (ready), 1 otherwise (loading, draining, not listening). Plain bash
# (/dev/tcp) so the runtime image needs no curl.
port="${MFASERVE_PORT:-8000}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
read -r -t 5 _ status _ <&3 || exit 1
[ "$status" = 200 ]
