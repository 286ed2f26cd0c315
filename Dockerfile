# CPU scoring service: `sigclass serve` for a model baked into the image. Two targets:
#   lean (the default, last stage): a bundle from `sigclass export MODEL --format bundle -o bundle`,
#     served by sigclass.runtime on ONNX Runtime, NumPy and Pillow (the `serve` extra; no PyTorch).
#       docker build -t sigclass-serve --build-arg BUNDLE=bundle .
#   full: a run or model folder, served on the full install (PyTorch; CAM with explain=true).
#       docker build --target full -t sigclass-serve-full --build-arg MODEL=runs/my-run .
#   docker run -p 8000:8000 sigclass-serve
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE SIGCLASS_CACHE_DIR=/tmp/sigclass-cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN useradd --create-home --uid 10001 sigclass
EXPOSE 8000
# Inside a container the service must listen on all interfaces; outside, it binds 127.0.0.1.
CMD ["sigclass", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]


FROM base AS full
# CPU wheels of PyTorch keep the image small; the service picks ONNX Runtime when it is faster.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && pip install ".[all]"
ARG MODEL=model
COPY --chown=sigclass ${MODEL} /model
USER sigclass


FROM base AS lean
# sigclass without its dependencies, then only the `serve` extra (read from pyproject.toml).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serve']))" > /tmp/serve.txt \
    && pip install -r /tmp/serve.txt && pip install --no-deps . && rm /tmp/serve.txt
ARG BUNDLE=bundle
COPY --chown=sigclass ${BUNDLE} /model
USER sigclass
