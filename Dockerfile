# asr-engine's websocket server on ONNX Runtime (no torch): the bundled model, port 2700.
#   docker build -t asr-engine . && docker run -p 2700:2700 asr-engine
# Readiness: GET /readyz (503 while draining, at capacity or over the backlog bound); liveness: GET /healthz.
# SIGTERM drains: new sessions are refused, open ones finish for up to --drain-seconds, then it stops.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY asr_engine ./asr_engine
RUN pip install --no-cache-dir '.[cpu]' && rm -rf /root/.cache
ENV HOME=/tmp
USER 65534:65534
EXPOSE 2700
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:2700/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["asr-engine", "serve", "--host", "0.0.0.0", "--port", "2700", "--drain-seconds", "25"]
