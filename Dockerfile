# adapt-distill image: dashboard, workers and migrations (see docker-compose.yml).
#   docker build -t adapt-distill .                                  torch from the default index (CUDA build)
#   docker build --build-arg TORCH_INDEX_URL=<CPU wheel index> ...   small CPU-only image
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer, so pip never swaps the chosen build for another one.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi

WORKDIR /opt/adapt-distill
COPY . .
RUN pip install ".[onnx]" \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin adapt \
    && mkdir -p /data \
    && chown adapt:adapt /data

ENV ADAPT_DISTILL_HOME=/data \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
USER adapt
VOLUME ["/data"]
EXPOSE 8501

CMD ["adapt-distill", "up"]
