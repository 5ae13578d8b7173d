# KeyTrail's services (worker, projector, console) for docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY keytrail keytrail
COPY schemas schemas
COPY producers producers
COPY stream_processors stream_processors
COPY keystore keystore
COPY console console
COPY sql sql
RUN pip install --no-cache-dir '.[all]'
USER nobody
ENTRYPOINT ["keytrail"]
