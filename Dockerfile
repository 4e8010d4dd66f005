# lazystream worker and CLI. Multi-stage: dependencies are installed from requirements.lock (exact versions)
# in a build stage; the runtime image holds only the virtualenv and the CRDs, and runs as a non-root user.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/lazystream
COPY requirements.lock ./
RUN /opt/lazystream/bin/pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY lazystream ./lazystream
RUN /opt/lazystream/bin/pip install --no-deps .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/lazystream /opt/lazystream
COPY deploy/crds /opt/lazystream/crds
RUN useradd --system --uid 10001 --no-create-home lazystream \
    && mkdir -p /var/lib/lazystream && chown 10001:10001 /var/lib/lazystream
ENV PATH=/opt/lazystream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LAZYSTREAM_CRDS_DIR=/opt/lazystream/crds \
    LAZYSTREAM_TABLES_DATA_DIR=/var/lib/lazystream \
    LAZYSTREAM_WEB_HOST=0.0.0.0
USER 10001:10001
VOLUME ["/var/lib/lazystream"]
EXPOSE 6066
ENTRYPOINT ["lazystream"]
CMD ["worker"]
