# sharpbench on a CUDA-capable base; also usable as a Ray node image:
#   head:    docker run --gpus all --network host IMAGE ray start --head --block
#   workers: docker run --gpus all --network host IMAGE ray start --address=HEAD:6379 --block
#   driver:  docker run --network host -v $PWD/results:/app/results IMAGE sharpbench run configs/digits.yaml --address auto
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
# Dependencies first (pinned by the same constraints file as the README), so code edits rebuild fast.
COPY pyproject.toml constraints.txt README.md ./
COPY bench/__init__.py bench/__init__.py
RUN mkdir -p regularizers && touch regularizers/__init__.py \
    && pip install -c constraints.txt -e ".[cluster]" \
    && rm -rf bench regularizers
COPY . .
RUN pip install --no-deps -e . && sharpbench list

# Ray's ports (GCS, client, dashboard) for use as a cluster node.
EXPOSE 6379 10001 8265
CMD ["sharpbench", "--help"]
