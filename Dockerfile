# CPU scoring service: `sigclass serve` for a model baked into the image.
#   docker build -t sigclass-serve --build-arg MODEL=runs/my-run .
#   docker run -p 8000:8000 sigclass-serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE SIGCLASS_CACHE_DIR=/tmp/sigclass-cache

WORKDIR /app
# CPU wheels of PyTorch keep the image small; the service picks ONNX Runtime when it is faster.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && pip install ".[all]" \
    && useradd --create-home --uid 10001 sigclass

ARG MODEL=model
COPY --chown=sigclass ${MODEL} /model
USER sigclass
EXPOSE 8000
# Inside a container the service must listen on all interfaces; outside, it binds 127.0.0.1.
CMD ["sigclass", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
