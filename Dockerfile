# The one image of every Hotline process: api (the default command), worker, beat
# and the one-shot migrate of docker-compose.yml, which override the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 --user-group hotline

WORKDIR /app

# The dependencies first, in a layer of their own, so that a change to the code
# does not download them again.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Editable on purpose: hotline.migrate finds the Alembic scripts at
# <repository>/migrations, next to the hotline package. A regular install would
# put the packages in site-packages without migrations/, and `hotline db upgrade`
# would find nothing; installed in place, the packages run from /app and
# /app/migrations is where the code looks.
COPY . .
RUN pip install --no-deps -e . \
    && test -d /app/migrations/versions \
    && mkdir /data && chown hotline:hotline /data

# Only the embedded runtime (`hotline serve`) writes here; with HOTLINE_ENV=production
# nothing is written to the container's disk.
ENV HOTLINE_DATA_DIR=/data

USER hotline
EXPOSE 8000

# No HEALTHCHECK here: worker, beat and migrate run this image too and serve no HTTP;
# docker-compose.yml checks the api on /healthz.
#
# --no-access-log: uvicorn's access log prints client addresses and raw paths (which
# carry receipts); the app logs route templates instead. --no-proxy-headers: the app
# itself believes X-Forwarded-For only from HOTLINE_TRUSTED_PROXIES, and uses the
# client address for nothing but a keyed rate-limit hash. --ws none: uvicorn logs the
# client address of refused WebSocket upgrades; the hotline has no WebSockets.
CMD ["uvicorn", "hotline.web:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--no-access-log", "--no-proxy-headers", "--ws", "none"]
