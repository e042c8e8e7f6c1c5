# One image for the API, the workers and the CLI; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY detector ./detector
COPY bots ./bots
COPY extension_api ./extension_api
COPY worker ./worker
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1" \
 && pip install --no-cache-dir ".[ml,service,bots]" \
 && pip install --no-cache-dir --no-deps "facenet-pytorch==2.6.0"
ENV DEEPFAKE_CACHE_DIR=/cache DEEPFAKE_DATA_DIR=/data
# The public MesoNet weights, verified by sha256 from the manifest, baked into the image.
RUN deepfake-weights fetch && deepfake-weights list
RUN useradd --create-home --uid 1000 app && mkdir -p /data && chown -R app /data /cache
USER app
CMD ["deepfake-check", "--help"]
